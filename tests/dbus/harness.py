#!/usr/bin/python3
"""A desktop's D-Bus side for the tray tests, on a private session bus.

Plays org.kde.StatusNotifierWatcher (so libayatana-appindicator registers its item with us) and
org.freedesktop.Notifications (recording every Notify, able to emit ActionInvoked). The Rust test
drives it with one JSON object per line on stdin and reads one JSON answer per line on stdout.

Commands: items | item | layout | click {id} | notifications | invoke {id, key}
"""
import json
import os
import sys
import time

import dbus
import dbus.service
from dbus.mainloop.glib import DBusGMainLoop
from gi.repository import GLib

WATCHER = "org.kde.StatusNotifierWatcher"
ITEM = "org.kde.StatusNotifierItem"
DBUSMENU = "com.canonical.dbusmenu"
NOTIFICATIONS = "org.freedesktop.Notifications"


class Watcher(dbus.service.Object):
    def __init__(self, bus):
        super().__init__(bus, "/StatusNotifierWatcher")
        self.items = []  # (bus name, object path)

    @dbus.service.method(WATCHER, in_signature="s", out_signature="", sender_keyword="sender")
    def RegisterStatusNotifierItem(self, service, sender=None):
        if service.startswith("/"):
            item = (sender, service)
        else:
            item = (service, "/StatusNotifierItem")
        if item not in self.items:
            self.items.append(item)
        self.StatusNotifierItemRegistered("%s%s" % item)

    @dbus.service.method(WATCHER, in_signature="s", out_signature="")
    def RegisterStatusNotifierHost(self, service):
        pass

    @dbus.service.signal(WATCHER, signature="s")
    def StatusNotifierItemRegistered(self, service):
        pass

    @dbus.service.signal(WATCHER, signature="s")
    def StatusNotifierItemUnregistered(self, service):
        pass

    @dbus.service.signal(WATCHER, signature="")
    def StatusNotifierHostRegistered(self):
        pass

    def props(self):
        return {
            "RegisteredStatusNotifierItems": dbus.Array(
                ["%s%s" % i for i in self.items], signature="s"
            ),
            "IsStatusNotifierHostRegistered": dbus.Boolean(True),
            "ProtocolVersion": dbus.Int32(0),
        }

    @dbus.service.method(dbus.PROPERTIES_IFACE, in_signature="ss", out_signature="v")
    def Get(self, interface, prop):
        return self.props()[prop]

    @dbus.service.method(dbus.PROPERTIES_IFACE, in_signature="s", out_signature="a{sv}")
    def GetAll(self, interface):
        return self.props()

    # The host side of the protocol is a method in some implementations.
    @dbus.service.method(WATCHER, in_signature="", out_signature="b")
    def IsStatusNotifierHostRegistered(self):
        return True


class Notifications(dbus.service.Object):
    def __init__(self, bus):
        super().__init__(bus, "/org/freedesktop/Notifications")
        self.calls = []
        self.next_id = 1

    @dbus.service.method(NOTIFICATIONS, in_signature="susssasa{sv}i", out_signature="u")
    def Notify(self, app_name, replaces_id, icon, summary, body, actions, hints, timeout):
        nid = self.next_id
        self.next_id += 1
        self.calls.append(
            {
                "id": nid,
                "app_name": str(app_name),
                "icon": str(icon),
                "summary": str(summary),
                "body": str(body),
                "actions": [str(a) for a in actions],
                "at": time.time(),
            }
        )
        return dbus.UInt32(nid)

    @dbus.service.method(NOTIFICATIONS, in_signature="u", out_signature="")
    def CloseNotification(self, nid):
        self.NotificationClosed(nid, 3)

    @dbus.service.method(NOTIFICATIONS, in_signature="", out_signature="as")
    def GetCapabilities(self):
        return ["actions", "body"]

    @dbus.service.method(NOTIFICATIONS, in_signature="", out_signature="ssss")
    def GetServerInformation(self):
        return ("tiffin-test", "tiffin", "1", "1.2")

    @dbus.service.signal(NOTIFICATIONS, signature="uu")
    def NotificationClosed(self, nid, reason):
        pass

    @dbus.service.signal(NOTIFICATIONS, signature="us")
    def ActionInvoked(self, nid, key):
        pass


def plain(v):
    """D-Bus values to JSON-able values; byte arrays become their length."""
    if isinstance(v, dbus.Array) and v.signature == "y":
        return {"bytes": len(v)}
    if isinstance(v, (dbus.Array, list, tuple, dbus.Struct)):
        return [plain(x) for x in v]
    if isinstance(v, (dbus.Dictionary, dict)):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, dbus.Boolean):
        return bool(v)
    if isinstance(v, (dbus.Int16, dbus.Int32, dbus.Int64, dbus.UInt16, dbus.UInt32, dbus.UInt64, dbus.Byte)):
        return int(v)
    if isinstance(v, dbus.Double):
        return float(v)
    return str(v)


def layout_node(node):
    nid, props, children = node
    return {
        "id": int(nid),
        "props": plain(props),
        "children": [layout_node(c) for c in children],
    }


def main():
    DBusGMainLoop(set_as_default=True)
    bus = dbus.SessionBus()
    watcher = Watcher(bus)
    notes = Notifications(bus)
    names = [dbus.service.BusName(WATCHER, bus), dbus.service.BusName(NOTIFICATIONS, bus)]
    loop = GLib.MainLoop()

    def item_proxy():
        if not watcher.items:
            raise RuntimeError("no item registered")
        name, path = watcher.items[-1]
        return name, path, bus.get_object(name, path)

    def handle(req):
        cmd = req["cmd"]
        if cmd == "items":
            return ["%s%s" % i for i in watcher.items]
        if cmd == "item":
            _, _, obj = item_proxy()
            return plain(obj.GetAll(ITEM, dbus_interface=dbus.PROPERTIES_IFACE))
        if cmd == "layout":
            name, _, obj = item_proxy()
            menu_path = obj.Get(ITEM, "Menu", dbus_interface=dbus.PROPERTIES_IFACE)
            menu = bus.get_object(name, menu_path)
            _rev, root = menu.GetLayout(0, -1, dbus.Array([], signature="s"), dbus_interface=DBUSMENU)
            return layout_node(root)
        if cmd == "click":
            name, _, obj = item_proxy()
            menu_path = obj.Get(ITEM, "Menu", dbus_interface=dbus.PROPERTIES_IFACE)
            menu = bus.get_object(name, menu_path)
            menu.Event(
                dbus.Int32(req["id"]),
                "clicked",
                dbus.Int32(0, variant_level=1),
                dbus.UInt32(int(time.time()) & 0xFFFFFFFF),
                dbus_interface=DBUSMENU,
            )
            return True
        if cmd == "notifications":
            return notes.calls
        if cmd == "invoke":
            notes.ActionInvoked(dbus.UInt32(req["id"]), req["key"])
            return True
        raise RuntimeError("unknown command %r" % cmd)

    pending = bytearray()

    def on_stdin(source, condition):
        # Raw reads: a buffered readline could swallow several requests behind one wake-up.
        data = os.read(0, 65536)
        if not data:
            loop.quit()
            return False
        pending.extend(data)
        while b"\n" in pending:
            line, _, rest = bytes(pending).partition(b"\n")
            pending[:] = rest
            try:
                answer = {"ok": True, "data": handle(json.loads(line))}
            except Exception as e:  # the test reads the message
                answer = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()
        return True

    GLib.io_add_watch(0, GLib.PRIORITY_DEFAULT, GLib.IO_IN | GLib.IO_HUP, on_stdin)
    sys.stdout.write(json.dumps({"ok": True, "data": "ready"}) + "\n")
    sys.stdout.flush()
    loop.run()
    del names


if __name__ == "__main__":
    main()
