# The tray's words in English: the source catalog. Every message here must be in fr.ftl and
# de.ftl too (tests/it/tray_i18n.rs and src/tray/i18n.rs's tests fail otherwise).

## Headlines (the first menu line and the tooltip's start)
agent-not-reachable = Agent not reachable
up-to-date = Up to date
update-available-generation = Update available: generation { $g }
update-available = Update available
update-interrupted = Update to generation { $g } was interrupted
update-failed-at = Update to generation { $g } failed at { $step }
update-failed = Update to generation { $g } failed
checking-failed = Checking for updates failed
rolled-back = Rolled back
restart-needed = Restart needed
server-not-reachable = Update server not reachable
updating = Updating: { $step }
updating-to = Updating to generation { $g }: { $step }
download-files = { $done } of { $total } files
step-downloading = downloading
step-building = building
step-activating = activating
step-verifying = verifying
step-committing = committing
step-rolling-back = rolling back
step-starting = starting

## Status lines
agent-running-question = Is the tiffin agent running?
agent-not-allowed = Not allowed to use its socket: ask to join its group
generation-applied = Generation { $g }, applied { $ago }
generation = Generation { $g }
publication-unsigned = Publication unsigned (not verified)
publication-too-old = Publication too old: not applied
checking = Checking for updates…
not-checked-yet = Not checked yet
last-check = Last check { $ago }
last-check-unreachable = Last check { $ago }: server not reachable
last-check-failed = Last check { $ago }: failed
served-by = Checked at { $url }
rolled-back-because = Rolled back: { $why }
rolled-back-at = Rolled back at { $clock }: { $why }
rolled-back-ago = Rolled back { $ago }: { $why }
changes-more = and { $n } more
changes-restart = Restart needed after this update
applies-itself = Applies itself { $when } unless you update now
postponed-until = Postponed until { $when }
waiting-for-power = Waiting for mains power to update
waiting-for-network = Waiting for a network that is not metered to update
waiting-for-both = Waiting for mains power and a network that is not metered to update

## Menu
menu-update-now = Update now
menu-check-now = Check for updates
menu-roll-back = Roll back to previous system…
menu-show-log = Show last log
menu-start-at-login = Start at login
menu-quit = Quit
menu-restart-now = Restart now
menu-later-hour = Later: in 1 hour
menu-later-tonight = Later: tonight at { $clock }
menu-later-tomorrow = Later: tomorrow at { $clock }

## Notifications
action-update-now = Update now
action-restart-now = Restart now
action-roll-back = Roll back
action-cancel = Cancel
action-later-hour = In 1 hour
action-later-tonight = Tonight
action-later-tomorrow = Tomorrow
notify-rolled-back = Generation { $g } was rolled back
notify-updated = Updated to generation { $g }
notify-restart-to-finish = Restart to finish the update.
notify-up-to-date = The system is up to date.
notify-failed-at = Failed at { $step }
notify-failed = Failed
notify-update-failed = Update to generation { $g } failed
notify-confirm-rollback = Roll back to the previous system?
notify-confirm-rollback-body = This leaves { $current } and activates the system before it.
notify-current-generation = generation { $g }
notify-current-system = the current system
notify-agent-unreachable = tiffin agent not reachable
notify-agent-unreachable-body = No contact for { $span }; updates are not being applied.
notify-applies-itself = It applies itself { $when } unless you update now.
notify-applies-at-deadline = It is applied by itself at the deadline if you do not.
notify-apply-when-it-suits = Apply it when it suits you.
notify-restart-planned = This machine restarts at { $clock }
notify-restart-planned-body = The update needs a restart; it happens by itself inside the admin's reboot window. Save your work.
notify-did-not-start = { $what } did not start
what-update = Update
what-check = Check
what-rollback = Rollback
what-postpone = Postpone
what-restart = Restart
what-start-at-login = Start at login
what-show-last-log = Show last log

## Times
today-at = today at { $clock }
tomorrow-at = tomorrow at { $clock }
on-day-at = on { $day } at { $clock }
day-pattern = %a %-d %b
just-now = just now
ago = { $span } ago
span-s = { $n } s
span-min = { $n } min
span-h = { $n } h
span-day = 1 day
span-days = { $n } days

## Backups and the binary cache
download-paths = { $done } of { $total } paths
menu-back-up-now = Back up now
backup-running = Backing up now…
backup-last = Last backup: { $ago }
backup-none-yet = Last backup: none yet
backup-failed-because = Backup failed { $ago }: { $why }
backup-failed-ago = Backup failed { $ago }
notify-backup-failed = Backup failed
notify-backup-overdue = Backup overdue
notify-backup-old = The last backup is { $age } old; backups should run every { $every }.
notify-backup-never = This machine has not been backed up yet.
