#!/usr/bin/env bash
# keel-pool's client authentication, as PgBouncer 1.18 does it: auth_type
# md5 / scram-sha-256 / trust against the auth_file (md5 and SCRAM secrets,
# SCRAM secrets also usable under auth_type md5), auth_query through
# auth_user for users not in the auth_file, and the error texts a client
# sees (PgBouncer 1.18's, recorded below).
# shellcheck source-path=SCRIPTDIR disable=SC2119,SC2016 # optional arguments; literal $1 of auth_query
source "$(dirname "$0")/pool_lib.sh"
pool_init "$@"

# PgBouncer 1.18's FATAL messages (psql prints "FATAL:  TEXT").
err_password='FATAL:  password authentication failed'
err_sasl='FATAL:  SASL authentication failed'
err_trust='FATAL:  "trust" authentication failed'
err_server_scram='FATAL:  server login failed: wrong password type'
err_authquery_nouser='FATAL:  bouncer config error'

# login_ok WHAT USER PASSWORD: USER logs in with PASSWORD and is USER.
login_ok() {
    local what=$1 user=$2 out
    out=$(PQPASS=$3 pq "$user" -c "SELECT current_user" 2>&1) ||
        fail "$what: login failed: $out"
    [[ $out == "$user" ]] || fail "$what: current_user is '$out', want '$user'"
    pass "$what"
}

# login_fails WHAT USER PASSWORD TEXT: the login fails and psql's error
# contains TEXT.
login_fails() {
    local what=$1 user=$2 out
    if out=$(PQPASS=$3 pq "$user" -c "SELECT current_user" 2>&1); then
        fail "$what: login succeeded (output '$out'), should have failed"
    fi
    [[ $out == *"$4"* ]] || fail "$what: error '$out' does not contain '$4'"
    pass "$what"
}

# with_auth K=V...: the pooler (re)started with these [pgbouncer] settings.
with_auth() {
    [[ -n $pool_pid ]] && stop_pool INT
    write_ini "$@"
    start_pool
}

start_pg
write_userlist

with_auth auth_type=md5
login_ok "md5: md5_user, right password" md5_user md5pass
login_fails "md5: md5_user, wrong password" md5_user wrong "$err_password"
login_ok "md5: scram_user (SCRAM secret in auth_file), right password" scram_user scrampass
login_fails "md5: scram_user, wrong password" scram_user wrong "$err_sasl"
login_fails "md5: user not in auth_file, no auth_query" query_user querypass "$err_password"
login_fails "md5: unknown user, no auth_query" nosuch_user whatever "$err_password"
login_fails "md5: trust_user (empty password in auth_file), some password" trust_user something "$err_password"

with_auth auth_type=scram-sha-256
login_ok "scram-sha-256: scram_user, right password" scram_user scrampass
login_fails "scram-sha-256: scram_user, wrong password" scram_user wrong "$err_sasl"
# An md5 secret cannot serve SCRAM: even the right password fails.
login_fails "scram-sha-256: md5_user (md5 secret), right password" md5_user md5pass "$err_sasl"

with_auth auth_type=trust
login_ok "trust: trust_user" trust_user ""
login_ok "trust: md5_user with a wrong password" md5_user wrong
# scram_user's SCRAM secret is no use for logging in to PostgreSQL without
# a SCRAM exchange with the client (no server connection is pooled yet).
login_fails "trust: scram_user, no SCRAM exchange to pass through" scram_user "" "$err_server_scram"
login_fails "trust: user not in auth_file" nosuch_user "" "$err_trust"

with_auth auth_type=md5 auth_user=auth_user 'auth_query=SELECT usename, passwd FROM public.user_lookup($1)'
login_ok "auth_query: query_user (not in auth_file), right password" query_user querypass
login_fails "auth_query: query_user, wrong password" query_user wrong "$err_sasl"
login_ok "auth_query: md5_user still from auth_file" md5_user md5pass
login_fails "auth_query: user unknown to PostgreSQL too" nosuch_user whatever "$err_authquery_nouser"

stop_pool INT
echo "$pool_test: all checks passed"
