#!/usr/bin/env bash
# CI: lets `docker -H ssh://…` reach the swarm manager: the deploy key (file or text variable
# SSH_PRIVATE_KEY) into ~/.ssh, the manager's host key (SSH_KNOWN_HOSTS) into known_hosts.
set -euo pipefail
: "${SSH_PRIVATE_KEY:?set the CI variable SSH_PRIVATE_KEY (private key of the deploy user)}"
: "${SSH_KNOWN_HOSTS:?set the CI variable SSH_KNOWN_HOSTS (ssh-keyscan of the swarm manager)}"
: "${SWARM_DOCKER_HOST:?set SWARM_DOCKER_HOST, e.g. ssh://deploy@swarm-manager.example}"
mkdir -p ~/.ssh
chmod 700 ~/.ssh
if [ -f "$SSH_PRIVATE_KEY" ]; then
    install -m 600 "$SSH_PRIVATE_KEY" ~/.ssh/id_deploy
else
    (umask 077 && printf '%s\n' "$SSH_PRIVATE_KEY" > ~/.ssh/id_deploy)
fi
if [ -f "$SSH_KNOWN_HOSTS" ]; then
    cat "$SSH_KNOWN_HOSTS" > ~/.ssh/known_hosts
else
    printf '%s\n' "$SSH_KNOWN_HOSTS" > ~/.ssh/known_hosts
fi
printf 'Host *\n  IdentityFile ~/.ssh/id_deploy\n  IdentitiesOnly yes\n  StrictHostKeyChecking yes\n' > ~/.ssh/config
chmod 600 ~/.ssh/config ~/.ssh/known_hosts
DOCKER_HOST=$SWARM_DOCKER_HOST docker version --format 'swarm manager: Docker {{.Server.Version}}'
