//! Every SMTP reply sealgate sends, defined once, with its enhanced status code
//! (RFC 3463). Handlers name a reply; they never spell one out.

use std::borrow::Cow;

/// One SMTP reply: a code, an enhanced status code and a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code.
    pub code: u16,
    /// The enhanced status code, class.subject.detail; `None` for replies that carry none
    /// (the greeting, EHLO, 354).
    pub esc: Option<[u8; 3]>,
    /// Human text; may hold several lines separated by '\n' (sent as a multi-line reply).
    pub text: Cow<'static, str>,
}

impl Reply {
    const fn fixed(code: u16, esc: [u8; 3], text: &'static str) -> Reply {
        Reply {
            code,
            esc: Some(esc),
            text: Cow::Borrowed(text),
        }
    }

    /// A reply with text made at run time.
    pub fn new(code: u16, esc: Option<[u8; 3]>, text: impl Into<Cow<'static, str>>) -> Reply {
        Reply {
            code,
            esc,
            text: text.into(),
        }
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 4xx: the client should try again later.
    pub fn is_temporary(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// The enhanced status code as text ("5.1.1"), or the one implied by the code class.
    pub fn status(&self) -> String {
        let [a, b, c] = self.esc.unwrap_or([(self.code / 100) as u8, 0, 0]);
        format!("{a}.{b}.{c}")
    }

    /// The reply as it goes on the wire, CRLF-terminated, multi-line where the text is.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.text.len() + 16);
        self.write_to(&mut out);
        out
    }

    /// Appends the wire form to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let mut lines = self.text.split('\n').peekable();
        while let Some(line) = lines.next() {
            let sep = if lines.peek().is_some() { '-' } else { ' ' };
            out.extend_from_slice(format!("{}{sep}", self.code).as_bytes());
            if let Some([a, b, c]) = self.esc {
                out.extend_from_slice(format!("{a}.{b}.{c} ").as_bytes());
            }
            // Never let a peer's text break our framing.
            out.extend(line.bytes().filter(|&b| b != b'\r' && b != b'\n'));
            out.extend_from_slice(b"\r\n");
        }
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.esc {
            Some(_) => write!(
                f,
                "{} {} {}",
                self.code,
                self.status(),
                self.text.replace('\n', " / ")
            ),
            None => write!(f, "{} {}", self.code, self.text.replace('\n', " / ")),
        }
    }
}

// The greeting, EHLO and the other replies of a healthy session.

pub fn greeting(hostname: &str) -> Reply {
    Reply::new(220, None, format!("{hostname} ESMTP sealgate ready"))
}

/// The EHLO reply: the greeting line, then one line per extension.
pub fn ehlo(hostname: &str, client: &str, extensions: &[String]) -> Reply {
    let mut text = format!("{hostname} greets {client}");
    for ext in extensions {
        text.push('\n');
        text.push_str(ext);
    }
    Reply::new(250, None, text)
}

pub fn helo(hostname: &str) -> Reply {
    Reply::new(250, None, hostname.to_string())
}

pub const OK: Reply = Reply::fixed(250, [2, 0, 0], "OK");
pub const SENDER_OK: Reply = Reply::fixed(250, [2, 1, 0], "sender OK");
pub const RECIPIENT_OK: Reply = Reply::fixed(250, [2, 1, 5], "recipient OK");
pub const RESET_OK: Reply = Reply::fixed(250, [2, 0, 0], "reset");
pub const NOOP_OK: Reply = Reply::fixed(250, [2, 0, 0], "OK");
pub const VRFY_CANNOT: Reply = Reply::fixed(
    252,
    [2, 5, 2],
    "cannot VRFY user, but will accept message and attempt delivery",
);
pub const HELP: Reply = Reply::fixed(
    214,
    [2, 0, 0],
    "sealgate: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS",
);
pub const START_DATA: Reply = Reply {
    code: 354,
    esc: None,
    text: Cow::Borrowed("end data with <CR><LF>.<CR><LF>"),
};
pub const START_TLS: Reply = Reply::fixed(220, [2, 0, 0], "ready to start TLS");
pub const BYE: Reply = Reply::fixed(221, [2, 0, 0], "bye");

/// The message is with the next hop (or, for some copies, in the retry spool).
pub fn queued(id: &str) -> Reply {
    Reply::new(250, Some([2, 0, 0]), format!("OK, handed on as {id}"))
}

/// A refusal from the inbound next hop (the internal mail server) or from our relay
/// towards it, as an internet sender gets it: the code and enhanced status code are
/// kept, as promised, and the text is a generic one by the status's subject (RFC
/// 3463), because the internal server's own words, and ours about reaching it, may name
/// internal hosts and addresses. The full reply is in the log.
pub fn for_outsiders(reply: &Reply) -> Reply {
    let [class, subject, detail] = reply.esc.unwrap_or([(reply.code / 100) as u8, 0, 0]);
    let what = match subject {
        1 => "recipient address rejected",
        2 => "mailbox unavailable",
        3 => "mail system unavailable",
        4 => "delivery to the recipient's mail server failed",
        5 => "mail protocol error",
        6 => "message content not accepted",
        7 => "rejected by policy",
        _ => "not delivered",
    };
    let text = if reply.is_temporary() {
        format!("{what}; try again later")
    } else {
        what.to_string()
    };
    Reply::new(reply.code, Some([class, subject, detail]), text)
}

// Refusals that are the client's fault.

pub const UNRECOGNIZED: Reply = Reply::fixed(500, [5, 5, 1], "command unrecognized");
pub const LINE_TOO_LONG: Reply = Reply::fixed(500, [5, 5, 2], "line too long");
pub const BAD_SEQUENCE: Reply = Reply::fixed(503, [5, 5, 1], "bad sequence of commands");
pub const NEED_EHLO: Reply = Reply::fixed(503, [5, 5, 1], "send EHLO or HELO first");
pub const NEED_MAIL: Reply = Reply::fixed(503, [5, 5, 1], "send MAIL first");
pub const NEED_RCPT: Reply = Reply::fixed(503, [5, 5, 1], "send RCPT first");
pub const NESTED_MAIL: Reply = Reply::fixed(503, [5, 5, 1], "sender already given");
pub const TLS_ACTIVE: Reply = Reply::fixed(503, [5, 5, 1], "TLS already active");
pub const NOT_IMPLEMENTED: Reply = Reply::fixed(502, [5, 5, 1], "command not implemented");
pub const SYNTAX: Reply = Reply::fixed(501, [5, 5, 4], "syntax error in parameters or arguments");
pub const BAD_SENDER: Reply = Reply::fixed(501, [5, 1, 7], "bad sender address syntax");
pub const BAD_RECIPIENT: Reply = Reply::fixed(501, [5, 1, 3], "bad recipient address syntax");
pub const NUL_IN_COMMAND: Reply = Reply::fixed(501, [5, 5, 4], "NUL byte in command");
pub const NO_TLS: Reply = Reply::fixed(454, [4, 7, 0], "TLS not available");

pub fn unsupported_parameter(param: &str) -> Reply {
    let param: String = param
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(40)
        .collect();
    Reply::new(
        555,
        Some([5, 5, 4]),
        format!("parameter {param} not supported"),
    )
}

pub const UTF8_NOT_DECLARED: Reply = Reply::fixed(
    553,
    [5, 6, 7],
    "non-ASCII address needs the SMTPUTF8 parameter",
);
pub const TOO_BIG: Reply = Reply::fixed(552, [5, 3, 4], "message size exceeds fixed limit");
pub const TOO_MANY_RECIPIENTS: Reply = Reply::fixed(452, [4, 5, 3], "too many recipients");
pub const RELAY_DENIED: Reply = Reply::fixed(550, [5, 7, 1], "relaying denied");
/// `user%other.org@ours` or `other.org!user@ours`: a route through us to somewhere
/// else, which internal MTAs may still honour (Postfix's allow_untrusted_routing).
pub const ROUTING_DENIED: Reply =
    Reply::fixed(550, [5, 7, 1], "sender-specified routing is not allowed");
pub const CLIENT_DENIED: Reply = Reply::fixed(
    554,
    [5, 7, 1],
    "access denied: this listener takes mail from internal MTAs only",
);
pub const NO_VALID_RECIPIENTS: Reply = Reply::fixed(554, [5, 5, 1], "no valid recipients");

// Endings of a session that are not the client's choice.

pub const TOO_MANY_ERRORS: Reply =
    Reply::fixed(421, [4, 7, 0], "too many errors, closing connection");
pub const IDLE_TIMEOUT: Reply = Reply::fixed(421, [4, 4, 2], "idle timeout, closing connection");
pub const DATA_TIMEOUT: Reply = Reply::fixed(421, [4, 4, 2], "DATA timeout, closing connection");
pub const TOO_MANY_CONNECTIONS: Reply =
    Reply::fixed(421, [4, 3, 2], "too many connections, try again later");
/// One client holds its share of the listener's connections already (RFC 5321
/// §4.3.2 allows 421 in place of the greeting; X.7.0: a policy, not a fault).
pub const TOO_MANY_FROM_CLIENT: Reply = Reply::fixed(
    421,
    [4, 7, 0],
    "too many connections from your address, try again later",
);
pub const SHUTTING_DOWN: Reply = Reply::fixed(421, [4, 3, 0], "shutting down, try again later");

// What the relay says when the next hop does not give a reply of its own.

/// The next hop could not be reached, dropped the connection or timed out.
pub fn next_hop_unavailable(detail: &str) -> Reply {
    Reply::new(
        451,
        Some([4, 4, 1]),
        format!("next hop unavailable: {detail}"),
    )
}

/// What a DSN says of a copy the admin deleted from the retry spool (`sealgate spool
/// delete`).
pub const DELETED_BY_ADMIN: Reply = Reply::fixed(
    550,
    [5, 0, 0],
    "deleted from the retry spool by the mail administrator",
);

/// The next hop failed recently and is left alone until `minutes` from now (the
/// circuit breaker): no connection is attempted. The text asks the client to come back:
/// sealgate keeps nothing of a message it answers with this, so "will retry" would be
/// a promise it does not keep.
pub fn next_hop_resting(minutes: u64) -> Reply {
    let unit = if minutes == 1 { "minute" } else { "minutes" };
    Reply::new(
        451,
        Some([4, 4, 1]),
        format!("next hop unavailable; try again in {minutes} {unit}"),
    )
}

/// The `dir:` next hop wrote the transaction to `path`.
pub fn written_to(path: &std::path::Path) -> Reply {
    Reply::new(
        250,
        Some([2, 0, 0]),
        format!("written to {}", path.display()),
    )
}

/// A spooled copy outlived `[spool] lifetime`; `last` is the next hop's last reply.
pub fn delivery_expired(last: &Reply) -> Reply {
    Reply::new(
        554,
        Some([5, 4, 7]),
        format!("delivery time expired; last reply: {last}"),
    )
}

/// The message needs SMTPUTF8 and the next hop does not offer it.
pub const NEXT_HOP_NO_SMTPUTF8: Reply = Reply::fixed(
    553,
    [5, 6, 7],
    "the next hop does not support SMTPUTF8, which this message needs",
);

/// Something went wrong inside sealgate; retrying later may help.
pub fn local_error(detail: &str) -> Reply {
    Reply::new(451, Some([4, 3, 0]), format!("local error: {detail}"))
}

// What policy rules answer (a rule's own `reply` replaces the first).

/// `action = "reject"` without a `reply` of its own.
pub const REJECTED_BY_POLICY: Reply = Reply::fixed(550, [5, 7, 1], "rejected by policy");

/// What a recipient lacks for a rule that requires encryption: a key of the kind
/// the rule's `format` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingKey {
    /// `format = "auto"`: no key of either kind.
    Any,
    /// `format = "pgp"`.
    Pgp,
    /// `format = "smime"`.
    Smime,
}

impl MissingKey {
    fn words(self) -> &'static str {
        match self {
            MissingKey::Any => "usable key",
            MissingKey::Pgp => "usable OpenPGP key",
            MissingKey::Smime => "usable S/MIME certificate",
        }
    }
}

/// A rule requires encryption (`no_key = "reject"`) and the recipient has no usable key
/// of the kind it asks for.
pub fn encryption_required(recipient: &str, missing: MissingKey) -> Reply {
    Reply::new(
        550,
        Some([5, 7, 1]),
        format!(
            "encryption required, but there is no {} for {recipient}",
            missing.words()
        ),
    )
}

/// A no-key refusal in the words of the rule's `no_key_text` (checked when the rule
/// was loaded: printable ASCII, one line): the code and status of `refusal` stay, so
/// that the client still knows whether to try again.
pub fn no_key_in_rule_words(refusal: Reply, text: &str) -> Reply {
    Reply::new(refusal.code, refusal.esc, text.to_string())
}

/// The recipient's key lookup could not be answered (SERVFAIL, timeout, no
/// resolver) and the rule says `lookup_offline = "defer"`.
pub fn lookup_unavailable(recipient: &str) -> Reply {
    Reply::new(
        451,
        Some([4, 4, 3]),
        format!("the key lookup for {recipient} failed; try again later"),
    )
}

/// A rule requires encryption (`no_key = "defer"`) and no key of the kind it asks for
/// is known yet.
pub fn no_key_yet(recipient: &str, missing: MissingKey) -> Reply {
    Reply::new(
        451,
        Some([4, 7, 1]),
        format!(
            "encryption required and no {} for {recipient} yet; try again later",
            missing.words()
        ),
    )
}

// While the gateway's resolver cannot validate DNSSEC (it strips the signatures), no
// key can be looked up until an admin fixes it: the rule's `no_key` answers at once, and
// the text says that the fault is this gateway's, so that nobody looks for it at the
// recipient's end.

/// A rule requires encryption (`no_key = "reject"`), the recipient has no key in the
/// cache, and none can be looked up: the resolver cannot validate DNSSEC.
pub fn encryption_required_without_dnssec(recipient: &str) -> Reply {
    Reply::new(
        550,
        Some([5, 7, 1]),
        format!(
            "encryption required, but no key for {recipient} can be looked up: this gateway's DNS resolver cannot validate DNSSEC"
        ),
    )
}

/// The same with `no_key = "defer"`: deferred as the rule asks, with the reason.
pub fn no_key_yet_without_dnssec(recipient: &str) -> Reply {
    Reply::new(
        451,
        Some([4, 7, 1]),
        format!(
            "encryption required, and no key for {recipient} can be looked up until this gateway's DNS resolver validates DNSSEC; try again later"
        ),
    )
}

// What MX delivery (`next_hop = "mx"`) answers when DNS decides before any MX host can.

/// The recipient's domain does not exist, or has neither MX nor address (RFC 3463
/// X.1.2: bad destination system address). `detail` names the domain and why.
pub fn bad_destination(detail: &str) -> Reply {
    Reply::new(
        550,
        Some([5, 1, 2]),
        format!("bad destination system: {detail}"),
    )
}

/// The recipient's domain publishes a null MX: it accepts no mail (RFC 7505 §4.2 and
/// the X.1.10 code it registers).
pub fn null_mx(domain: &str) -> Reply {
    Reply::new(
        550,
        Some([5, 1, 10]),
        format!("Recipient address has null MX: {domain} accepts no mail"),
    )
}

/// The MX lookup for the recipient's domain failed (SERVFAIL, a timeout): the next
/// hop cannot be known now (RFC 3463 X.4.3: routing server failure).
pub fn mx_lookup_failed(detail: &str) -> Reply {
    Reply::new(451, Some([4, 4, 3]), format!("{detail}; try again later"))
}
