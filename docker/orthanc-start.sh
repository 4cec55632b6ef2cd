#!/bin/sh
# Starts Orthanc in the orthancteam/orthanc image: docker-compose.yml's `orthanc` service
# (profile pacs) runs `sh /medret/orthanc-start.sh /tmp/orthanc.json`.
#
# It refuses to start without a password nobody could guess (ORTHANC_PASSWORD: set, no
# placeholder such as CHANGE_ME, at least 16 characters of letters, digits, - and _),
# then registers the one user ORTHANC_USERNAME (default medret) with it, turns HTTP
# authentication on and hands over to the image's own entrypoint, which writes the
# configuration from the ORTHANC__* variables and runs Orthanc. Never prints the password.
#
#   ORTHANC_PASSWORD          the password (required)
#   ORTHANC_USERNAME          the user (default medret; letters, digits, - and _)
#   ORTHANC_IMAGE_ENTRYPOINT  what to exec (default /docker-entrypoint.sh; tests replace it)
set -eu

PROG=orthanc-start
MIN_PASSWORD_LENGTH=16
PLACEHOLDER_PASSWORDS="change_me change-me changeme password orthanc medret secret admin"
ADVICE="set ORTHANC_PASSWORD in .env to a random one:\
 python3 -c 'import secrets; print(secrets.token_urlsafe(24))'"

fail() {
    echo "$PROG: $*" >&2
    exit 1
}

password=${ORTHANC_PASSWORD:-}
username=${ORTHANC_USERNAME:-medret}

[ -n "$password" ] || fail "ORTHANC_PASSWORD is not set; $ADVICE"
lowered=$(printf '%s' "$password" | tr '[:upper:]' '[:lower:]')
for placeholder in $PLACEHOLDER_PASSWORDS; do
    if [ "$lowered" = "$placeholder" ]; then
        fail "ORTHANC_PASSWORD is a placeholder ('$placeholder'); $ADVICE"
    fi
done
if [ "${#password}" -lt "$MIN_PASSWORD_LENGTH" ]; then
    fail "ORTHANC_PASSWORD is shorter than $MIN_PASSWORD_LENGTH characters; $ADVICE"
fi
# Only characters that need no quoting in JSON or in a URL's user information.
case "$password" in
    *[!A-Za-z0-9_-]*) fail "ORTHANC_PASSWORD may use letters, digits, - and _ only; $ADVICE" ;;
esac
case "$username" in
    '' | *[!A-Za-z0-9_-]*) fail "ORTHANC_USERNAME may use letters, digits, - and _ only" ;;
esac

ORTHANC__AUTHENTICATION_ENABLED=true
ORTHANC__REGISTERED_USERS="{\"$username\": \"$password\"}"
export ORTHANC__AUTHENTICATION_ENABLED ORTHANC__REGISTERED_USERS
unset ORTHANC_PASSWORD password lowered
exec "${ORTHANC_IMAGE_ENTRYPOINT:-/docker-entrypoint.sh}" "$@"
