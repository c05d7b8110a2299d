"""Where a smoke-tested image runs in production: `docker` (one container, blue/green) and `swarm` (a
replicated service). Each target knows only its own engine objects; `tasks.release.deploy` picks one
and retires what the other left running."""
