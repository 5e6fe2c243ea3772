# Les mots du tray en français (catalogue source : en.ftl).

## Titres
agent-not-reachable = Agent injoignable
up-to-date = À jour
update-available-generation = Mise à jour disponible : génération { $g }
update-available = Mise à jour disponible
update-interrupted = La mise à jour vers la génération { $g } a été interrompue
update-failed-at = La mise à jour vers la génération { $g } a échoué à l’étape { $step }
update-failed = La mise à jour vers la génération { $g } a échoué
checking-failed = La recherche de mises à jour a échoué
rolled-back = Retour en arrière effectué
restart-needed = Redémarrage nécessaire
server-not-reachable = Serveur de mises à jour injoignable
updating = Mise à jour : { $step }
updating-to = Mise à jour vers la génération { $g } : { $step }
download-files = { $done } fichiers sur { $total }
step-downloading = téléchargement
step-building = construction
step-activating = activation
step-verifying = vérification
step-committing = validation
step-rolling-back = retour en arrière
step-starting = démarrage

## Lignes d’état
agent-running-question = L’agent tiffin est-il lancé ?
agent-not-allowed = Accès à son socket refusé : demandez à rejoindre son groupe
generation-applied = Génération { $g }, appliquée { $ago }
generation = Génération { $g }
publication-unsigned = Publication non signée (non vérifiée)
publication-too-old = Publication trop ancienne : non appliquée
checking = Recherche de mises à jour…
not-checked-yet = Pas encore vérifié
last-check = Dernière vérification { $ago }
last-check-unreachable = Dernière vérification { $ago } : serveur injoignable
last-check-failed = Dernière vérification { $ago } : échec
served-by = Vérifié auprès de { $url }
rolled-back-because = Retour en arrière : { $why }
rolled-back-at = Retour en arrière à { $clock } : { $why }
rolled-back-ago = Retour en arrière { $ago } : { $why }
changes-more = et { $n } de plus
changes-restart = Redémarrage nécessaire après cette mise à jour
applies-itself = S’applique d’elle-même { $when }, sauf si vous mettez à jour maintenant
postponed-until = Reportée jusqu’à { $when }
waiting-for-power = Attend le secteur pour se mettre à jour
waiting-for-network = Attend un réseau non limité pour se mettre à jour
waiting-for-both = Attend le secteur et un réseau non limité pour se mettre à jour

## Menu
menu-update-now = Mettre à jour maintenant
menu-check-now = Rechercher des mises à jour
menu-roll-back = Revenir au système précédent…
menu-show-log = Afficher le dernier journal
menu-start-at-login = Lancer à l’ouverture de session
menu-quit = Quitter
menu-restart-now = Redémarrer maintenant
menu-later-hour = Plus tard : dans 1 heure
menu-later-tonight = Plus tard : ce soir à { $clock }
menu-later-tomorrow = Plus tard : demain à { $clock }

## Notifications
action-update-now = Mettre à jour maintenant
action-restart-now = Redémarrer maintenant
action-roll-back = Revenir en arrière
action-cancel = Annuler
action-later-hour = Dans 1 heure
action-later-tonight = Ce soir
action-later-tomorrow = Demain
notify-rolled-back = La génération { $g } a été annulée
notify-updated = Mis à jour vers la génération { $g }
notify-restart-to-finish = Redémarrez pour terminer la mise à jour.
notify-up-to-date = Le système est à jour.
notify-failed-at = Échec à l’étape { $step }
notify-failed = Échec
notify-update-failed = La mise à jour vers la génération { $g } a échoué
notify-confirm-rollback = Revenir au système précédent ?
notify-confirm-rollback-body = Cela quitte { $current } et active le système d’avant.
notify-current-generation = la génération { $g }
notify-current-system = le système actuel
notify-agent-unreachable = Agent tiffin injoignable
notify-agent-unreachable-body = Aucun contact depuis { $span } ; les mises à jour ne sont pas appliquées.
notify-applies-itself = Elle s’applique d’elle-même { $when }, sauf si vous mettez à jour maintenant.
notify-applies-at-deadline = Elle s’applique d’elle-même à l’échéance si vous ne le faites pas.
notify-apply-when-it-suits = Appliquez-la quand cela vous convient.
notify-restart-planned = Cette machine redémarre à { $clock }
notify-restart-planned-body = La mise à jour demande un redémarrage ; il a lieu de lui-même dans la plage prévue par l’administrateur. Enregistrez votre travail.
notify-did-not-start = { $what } n’a pas démarré
what-update = La mise à jour
what-check = La vérification
what-rollback = Le retour en arrière
what-postpone = Le report
what-restart = Le redémarrage
what-start-at-login = Le lancement à l’ouverture de session
what-show-last-log = L’affichage du journal

## Heures
today-at = aujourd’hui à { $clock }
tomorrow-at = demain à { $clock }
on-day-at = le { $day } à { $clock }
day-pattern = %d/%m
just-now = à l’instant
ago = il y a { $span }
span-s = { $n } s
span-min = { $n } min
span-h = { $n } h
span-day = 1 jour
span-days = { $n } jours

## Sauvegardes et cache binaire
download-paths = { $done } chemins sur { $total }
menu-back-up-now = Sauvegarder maintenant
backup-running = Sauvegarde en cours…
backup-last = Dernière sauvegarde : { $ago }
backup-none-yet = Dernière sauvegarde : aucune pour l’instant
backup-failed-because = Échec de la sauvegarde { $ago } : { $why }
backup-failed-ago = Échec de la sauvegarde { $ago }
notify-backup-failed = Échec de la sauvegarde
notify-backup-overdue = Sauvegarde en retard
notify-backup-old = La dernière sauvegarde date de { $age } ; les sauvegardes devraient avoir lieu toutes les { $every }.
notify-backup-never = Cette machine n’a encore jamais été sauvegardée.
