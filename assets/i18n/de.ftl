# Die Wörter des Tray auf Deutsch (Quellkatalog: en.ftl).

## Überschriften
agent-not-reachable = Agent nicht erreichbar
up-to-date = Aktuell
update-available-generation = Update verfügbar: Generation { $g }
update-available = Update verfügbar
update-interrupted = Update auf Generation { $g } wurde unterbrochen
update-failed-at = Update auf Generation { $g } ist bei { $step } fehlgeschlagen
update-failed = Update auf Generation { $g } ist fehlgeschlagen
checking-failed = Suche nach Updates fehlgeschlagen
rolled-back = Zurückgesetzt
restart-needed = Neustart nötig
server-not-reachable = Update-Server nicht erreichbar
updating = Update: { $step }
updating-to = Update auf Generation { $g }: { $step }
download-files = { $done } von { $total } Dateien
step-downloading = Herunterladen
step-building = Bauen
step-activating = Aktivieren
step-verifying = Prüfen
step-committing = Übernehmen
step-rolling-back = Zurücksetzen
step-starting = Starten

## Statuszeilen
agent-running-question = Läuft der tiffin-Agent?
agent-not-allowed = Kein Zugriff auf seinen Socket: bitten Sie um Aufnahme in seine Gruppe
generation-applied = Generation { $g }, angewendet { $ago }
generation = Generation { $g }
publication-unsigned = Veröffentlichung nicht signiert (nicht geprüft)
publication-too-old = Veröffentlichung zu alt: nicht angewendet
checking = Suche nach Updates…
not-checked-yet = Noch nicht geprüft
last-check = Zuletzt geprüft { $ago }
last-check-unreachable = Zuletzt geprüft { $ago }: Server nicht erreichbar
last-check-failed = Zuletzt geprüft { $ago }: fehlgeschlagen
served-by = Geprüft bei { $url }
rolled-back-because = Zurückgesetzt: { $why }
rolled-back-at = Zurückgesetzt um { $clock }: { $why }
rolled-back-ago = Zurückgesetzt { $ago }: { $why }
changes-more = und { $n } weitere
changes-restart = Nach diesem Update ist ein Neustart nötig
applies-itself = Wird { $when } von selbst angewendet, außer Sie aktualisieren jetzt
postponed-until = Verschoben bis { $when }
waiting-for-power = Wartet auf Netzstrom für das Update
waiting-for-network = Wartet auf ein nicht getaktetes Netz für das Update
waiting-for-both = Wartet auf Netzstrom und ein nicht getaktetes Netz für das Update

## Menü
menu-update-now = Jetzt aktualisieren
menu-check-now = Nach Updates suchen
menu-roll-back = Zum vorherigen System zurück…
menu-show-log = Letztes Protokoll zeigen
menu-start-at-login = Bei Anmeldung starten
menu-quit = Beenden
menu-restart-now = Jetzt neu starten
menu-later-hour = Später: in 1 Stunde
menu-later-tonight = Später: heute Abend um { $clock }
menu-later-tomorrow = Später: morgen um { $clock }

## Benachrichtigungen
action-update-now = Jetzt aktualisieren
action-restart-now = Jetzt neu starten
action-roll-back = Zurücksetzen
action-cancel = Abbrechen
action-later-hour = In 1 Stunde
action-later-tonight = Heute Abend
action-later-tomorrow = Morgen
notify-rolled-back = Generation { $g } wurde zurückgesetzt
notify-updated = Auf Generation { $g } aktualisiert
notify-restart-to-finish = Starten Sie neu, um das Update abzuschließen.
notify-up-to-date = Das System ist aktuell.
notify-failed-at = Fehlgeschlagen bei { $step }
notify-failed = Fehlgeschlagen
notify-update-failed = Update auf Generation { $g } ist fehlgeschlagen
notify-confirm-rollback = Zum vorherigen System zurück?
notify-confirm-rollback-body = Damit wird { $current } verlassen und das System davor aktiviert.
notify-current-generation = Generation { $g }
notify-current-system = das aktuelle System
notify-agent-unreachable = tiffin-Agent nicht erreichbar
notify-agent-unreachable-body = Seit { $span } kein Kontakt; Updates werden nicht angewendet.
notify-applies-itself = Es wird { $when } von selbst angewendet, außer Sie aktualisieren jetzt.
notify-applies-at-deadline = Es wird zur Frist von selbst angewendet, wenn Sie es nicht tun.
notify-apply-when-it-suits = Wenden Sie es an, wann es Ihnen passt.
notify-restart-planned = Dieser Rechner startet um { $clock } neu
notify-restart-planned-body = Das Update braucht einen Neustart; er erfolgt von selbst im Neustart-Zeitfenster des Admins. Sichern Sie Ihre Arbeit.
notify-did-not-start = { $what }: konnte nicht starten
what-update = Update
what-check = Prüfung
what-rollback = Zurücksetzen
what-postpone = Verschieben
what-restart = Neustart
what-start-at-login = Start bei Anmeldung
what-show-last-log = Protokoll anzeigen

## Zeiten
today-at = heute um { $clock }
tomorrow-at = morgen um { $clock }
on-day-at = am { $day } um { $clock }
day-pattern = %d.%m.
just-now = gerade eben
ago = vor { $span }
span-s = { $n } s
span-min = { $n } Min.
span-h = { $n } Std.
span-day = 1 Tag
span-days = { $n } Tagen

## Sicherungen und Binär-Cache
download-paths = { $done } von { $total } Pfaden
menu-back-up-now = Jetzt sichern
backup-running = Sicherung läuft…
backup-last = Letzte Sicherung: { $ago }
backup-none-yet = Letzte Sicherung: noch keine
backup-failed-because = Sicherung fehlgeschlagen { $ago }: { $why }
backup-failed-ago = Sicherung fehlgeschlagen { $ago }
notify-backup-failed = Sicherung fehlgeschlagen
notify-backup-overdue = Sicherung überfällig
notify-backup-old = Die letzte Sicherung ist { $age } alt; Sicherungen sollten alle { $every } laufen.
notify-backup-never = Dieser Rechner wurde noch nie gesichert.
