// DefaultShaping.swift - the shaping file Carrier ships (`carrier shaping --print-defaults`)

/// The shipped shaping file. Values are conservative starting points for a sender
/// without an established reputation: raise them as a provider's replies allow. Each is
/// explained where it is set.
public let defaultShapingFile = #"""
# Carrier's default shaping. An operator's shaping file is laid over this one: each
# value it sets replaces the one here, and its [[rule]]s are tried before these.
#
# Limits apply per site (the set of MX hosts a domain resolves to, or a configured
# route). A [domain."..."] table may set message_rate, message_burst and
# max_recipients_per_transaction for that domain alone; connections belong to the site.
# Lookup order, field by field: domain, site, longest MX suffix, defaults.

[defaults]
# Postfix's destination concurrency: start at 5 parallel transactions per site and grow
# by slow start while deliveries succeed, up to 20.
initial_connections = 5
max_connections = 20
# Reconnect after 100 messages so one connection's problems stay small.
max_messages_per_connection = 100
# RFC 5321 (4.5.3.1.8) requires servers to accept at least 100 recipients per message.
max_recipients_per_transaction = 100

[scheduler]
# A domain keeps its site's turn for up to 8 transactions in a row (as one connection
# would carry them) before the site's next domain; 1 is strict round-robin. Domains of a
# site share its MX hosts, so receivers see no difference.
domain_burst = 8

# Bulk campaigns sending to one domain take turns, one transaction each (weight 1). A
# campaign may take more per turn, from 1 to 1000; none is weighted by default:
# [campaign."spring-sale"]
# weight = 3

[retry]
# First retry after 5 minutes, doubling to 4 hours, giving up after 5 days (Postfix's
# maximal_queue_lifetime). Each delay is stretched by up to 20% at random so a burst of
# failures does not come back as a burst.
retry_interval = "5m"
max_retry_interval = "4h"
max_age = "5d"
jitter = 0.2

[health]
# After 5 connection failures or 421 replies in a row, pause the site for a minute,
# doubling per failed probe up to an hour (Postfix's dead-destination feedback).
failures_before_pause = 5
cooldown = "1m"
max_cooldown = "1h"

# Gmail and Google Workspace (MX hosts under google.com / googlemail.com): Google
# throttles by reputation and answers 421 4.7.28 or 450 4.2.1 when a sender goes too
# fast. Moderate concurrency, a per-site message rate with room to burst.
[mx_suffix.".google.com"]
max_connections = 20
message_rate = "100/s"
message_burst = 50

[mx_suffix.".googlemail.com"]
max_connections = 20
message_rate = "100/s"
message_burst = 50

# Yahoo and AOL (MX hosts under yahoodns.net): few connections, modest per-connection
# volume; Yahoo defers with 421 4.7.0 [TSS04] when it wants less.
[mx_suffix.".yahoodns.net"]
max_connections = 10
max_messages_per_connection = 20
message_rate = "50/s"
message_burst = 20

# Microsoft consumer mail (Outlook.com, Hotmail, Live: MX under outlook.com) and
# Microsoft 365 (mail.protection.outlook.com): rate limits by IP reputation (451
# 4.7.650); keep concurrency moderate.
[mx_suffix.".outlook.com"]
max_connections = 10
max_messages_per_connection = 50
message_rate = "50/s"
message_burst = 20

# Apple iCloud (MX under icloud.com / mail.icloud.com): small concurrency.
[mx_suffix.".icloud.com"]
max_connections = 5
message_rate = "20/s"
message_burst = 10

# Response rules, first match wins. Each matches when the reply (code, enhanced code
# and text) has the given class (code_class, default "4"), contains every fragment
# (contains), and, when a pattern is given, matches that regular expression; all
# case-insensitive. Actions: suspend (duration), scale_rate (factor, duration), bounce;
# scope: domain, site (default) or campaign.

# Yahoo/AOL "421 4.7.0 [TSS04] Messages from ... temporarily deferred due to unexpected
# volume or user complaints": stop for 30 minutes.
[[rule]]
name = "yahoo-tss04"
contains = ["[TSS04]"]
scope = "site"
action = "suspend"
duration = "30m"

# Microsoft "451 4.7.650 The mail server [...] has been temporarily rate limited due to
# IP reputation": half the rate for an hour.
[[rule]]
name = "microsoft-4.7.650"
contains = ["4.7.650"]
scope = "site"
action = "scale_rate"
factor = 0.5
duration = "1h"

# Gmail "421 4.7.28 ... unusual rate of unsolicited mail": half the rate for an hour.
[[rule]]
name = "gmail-4.7.28"
contains = ["4.7.28"]
scope = "site"
action = "scale_rate"
factor = 0.5
duration = "1h"

# Gmail "450 4.2.1 The user you are trying to contact is receiving mail at a rate that
# prevents additional messages": that recipient's domain waits 15 minutes.
[[rule]]
name = "gmail-4.2.1-rate"
contains = ["4.2.1", "rate"]
scope = "domain"
action = "suspend"
duration = "15m"

# Generic "4.7.0 ... rate" throttles (too many messages or connections): half the rate
# for 30 minutes.
[[rule]]
name = "generic-rate-4.7.0"
contains = ["4.7.0", "rate"]
scope = "site"
action = "scale_rate"
factor = 0.5
duration = "30m"
"""#
