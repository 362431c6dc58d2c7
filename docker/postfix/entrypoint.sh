#!/bin/sh
# Configures the demo Postfix from the environment, then runs it in the foreground.
#
#   MAIL_HOSTNAME  its own name                         (default mail.example.com)
#   MAIL_DOMAIN    the domain it delivers locally       (default example.com)
#   MAIL_USERS     local mailboxes to create            (default "alice bob")
#   MYNETWORKS     clients it relays for: sealgate      (default 127.0.0.0/8)
#   RELAYHOST      smart host for outside mail; empty means direct MX delivery. Never
#                  point it at sealgate's outbound listener: that mail would loop.
set -eu

MAIL_HOSTNAME="${MAIL_HOSTNAME:-mail.example.com}"
MAIL_DOMAIN="${MAIL_DOMAIN:-example.com}"
MAIL_USERS="${MAIL_USERS:-alice bob}"
MYNETWORKS="${MYNETWORKS:-127.0.0.0/8}"
RELAYHOST="${RELAYHOST:-}"

echo "$MAIL_HOSTNAME" > /etc/mailname
postconf -e \
    "myhostname = $MAIL_HOSTNAME" \
    "mydomain = $MAIL_DOMAIN" \
    "myorigin = \$mydomain" \
    "mydestination = \$myhostname, localhost, \$mydomain" \
    "inet_interfaces = all" \
    "inet_protocols = ipv4" \
    "mynetworks = $MYNETWORKS" \
    "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination" \
    "relayhost = $RELAYHOST" \
    "home_mailbox = Maildir/" \
    "smtpd_tls_security_level = none" \
    "smtp_tls_security_level = may" \
    "maillog_file = /dev/stdout"

# A container has no syslog and no populated chroot: log through postlogd to stdout,
# and run every service outside the chroot.
if [ -z "$(postconf -M postlog/unix-dgram 2>/dev/null)" ]; then
    postconf -M "postlog/unix-dgram=postlog unix-dgram n - n - 1 postlogd"
fi
postconf -F '*/*/chroot = n'

first_user=""
for user in $MAIL_USERS; do
    [ -n "$first_user" ] || first_user="$user"
    id "$user" >/dev/null 2>&1 || useradd --create-home --shell /usr/sbin/nologin "$user"
done
# postmaster is an alias of root in Debian; root's own mailbox cannot be written by
# Postfix, so hand root's mail to the first user.
if [ -n "$first_user" ] && ! grep -q '^root:' /etc/aliases; then
    echo "root: $first_user" >> /etc/aliases
fi
newaliases

# A restarted container keeps the old pid file, which would stop the master starting.
rm -f /var/spool/postfix/pid/master.pid
exec postfix start-fg
