"""The sessions web app and its JSON API (docs/api.md): find, play and watch every session,
terminate a live one. Served by ``sshgate serve`` when ``web:`` is set."""
