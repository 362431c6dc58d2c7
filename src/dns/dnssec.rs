//! Whether the resolver lets key records be validated, and what the gateway does when
//! it does not.
//!
//! A resolver that strips DNSSEC (the systemd-resolved stub, Docker's embedded DNS at
//! 127.0.0.11, many forwarders) still answers every question, only without the
//! signatures, so every key lookup that needs DNSSEC fails. That lasts until an admin
//! fixes the resolver: it is a misconfiguration, not an outage. Taken for an outage,
//! a rule that requires encryption would defer the same mail with 451 on every retry
//! until the client gives up days later. So the gateway probes its resolver
//! ([`DnsResolver::probe_dnssec`](super::DnsResolver::probe_dnssec)) at start-up and
//! every [`PROBE_EVERY`], logs loudly what it finds and when that changes, records
//! the gauge `sealgate_dns_dnssec_ok`, and keeps the finding in a [`DnssecStatus`].
//! While that says the resolver cannot validate, a key lookup that fails is answered
//! as the rule's `no_key` says (the policy's verdict decides; see
//! `policy::verdict::Lookup::CannotValidate`).

use std::sync::Mutex;
use std::time::Duration;

/// How often the running gateway probes its resolver again: often enough that a fixed
/// (or newly broken) resolver is noticed within minutes, rarely enough to cost nothing.
pub const PROBE_EVERY: Duration = Duration::from_secs(10 * 60);

/// What one probe of the resolver found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnssecProbe {
    /// The root's DNSKEY validated from the trust anchors: key records can be checked.
    Validates,
    /// Asked with the DO bit, the resolver answered without any signature: it strips
    /// DNSSEC, and no key record can be validated through it.
    Strips,
    /// Signatures come through, but the root's keys do not validate (a clock far off,
    /// outdated trust anchors, a resolver that alters answers): the reason.
    DoesNotValidate(String),
    /// No answer (a timeout, SERVFAIL, REFUSED, a network error): nothing was learnt.
    Unanswered(String),
}

impl DnssecProbe {
    /// Whether this finding means that no key record can be validated until an admin
    /// acts, so that a failed lookup is not an outage.
    pub fn cannot_validate(&self) -> bool {
        matches!(self, DnssecProbe::Strips | DnssecProbe::DoesNotValidate(_))
    }

    /// The finding for an admin, with what to do about it. For `sealgate check` and
    /// the log.
    pub fn explain(&self) -> String {
        match self {
            DnssecProbe::Validates => "validates: key records can be checked".into(),
            DnssecProbe::Strips => format!(
                "the resolver strips DNSSEC (it answers without signatures, ignoring the \
                 DO bit), so no key record can be validated: {CONSEQUENCE}. {FIX}"
            ),
            DnssecProbe::DoesNotValidate(reason) => format!(
                "signatures come through, but {reason}: {CONSEQUENCE}. Check the system \
                 clock, and that the resolver passes answers on unaltered"
            ),
            DnssecProbe::Unanswered(reason) => format!(
                "the resolver did not answer the DNSSEC probe ({reason}); key lookups fail \
                 while it does not answer"
            ),
        }
    }

    /// Logs the finding: at start-up always, later when it changed. A resolver that
    /// cannot validate is an error (mail that a rule requires to be encrypted is
    /// refused or deferred until it is fixed); one that does not answer, a warning.
    pub fn log(&self, resolver: &str, at_start: bool) {
        let explained = self.explain();
        let event = if at_start {
            "DNSSEC probe at start-up"
        } else {
            "DNSSEC probe: the resolver changed"
        };
        match self {
            DnssecProbe::Validates => tracing::info!(%resolver, finding = %explained, "{event}"),
            DnssecProbe::Strips | DnssecProbe::DoesNotValidate(_) => {
                tracing::error!(%resolver, finding = %explained, "{event}")
            }
            DnssecProbe::Unanswered(_) => {
                tracing::warn!(%resolver, finding = %explained, "{event}")
            }
        }
    }
}

/// What a resolver that cannot validate does to key lookup.
const CONSEQUENCE: &str = "every key lookup outside [lookup] insecure_domains fails, and \
     rules that require encryption refuse or defer as their no_key says";

/// What an admin does about a resolver that strips DNSSEC.
const FIX: &str = "Fix: set [lookup] nameservers to a validating resolver that passes \
     DNSSEC on, such as a local unbound (README.md, \"A resolver for key lookup\"); in \
     Docker, not the embedded DNS at 127.0.0.11";

/// The kind of a finding, without its reason: a change of kind is what gets logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Validates,
    Strips,
    DoesNotValidate,
    Unanswered,
}

impl From<&DnssecProbe> for Kind {
    fn from(probe: &DnssecProbe) -> Kind {
        match probe {
            DnssecProbe::Validates => Kind::Validates,
            DnssecProbe::Strips => Kind::Strips,
            DnssecProbe::DoesNotValidate(_) => Kind::DoesNotValidate,
            DnssecProbe::Unanswered(_) => Kind::Unanswered,
        }
    }
}

/// What the gateway knows about its resolver's DNSSEC, from the probes so far. The key
/// lookup reads it when a lookup fails; the probing task writes it.
#[derive(Debug, Default)]
pub struct DnssecStatus {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The last probe's kind; `None` before the first.
    last: Option<Kind>,
    /// The last probe that got an answer said the resolver cannot validate.
    cannot_validate: bool,
}

impl DnssecStatus {
    /// Nothing known yet: lookups that fail count as outages until a probe says more.
    pub fn new() -> DnssecStatus {
        DnssecStatus::default()
    }

    /// Whether the resolver is known to be unable to validate: a key lookup that needed
    /// DNSSEC and failed then says nothing about an outage.
    pub fn cannot_validate(&self) -> bool {
        self.state.lock().expect("DNSSEC status").cannot_validate
    }

    /// Takes a probe's finding and sets the gauge. Returns whether its kind differs
    /// from the last one's (the first finding counts as a change), so that the caller
    /// logs changes only.
    ///
    /// A probe that got no answer leaves "cannot validate" as it was: silence is no
    /// evidence that a resolver stopped stripping DNSSEC, nor that it started. Lookups
    /// that fail meanwhile count as outages only if the resolver was not known to strip.
    pub fn record(&self, probe: &DnssecProbe) -> bool {
        let kind = Kind::from(probe);
        let mut state = self.state.lock().expect("DNSSEC status");
        if kind != Kind::Unanswered {
            state.cannot_validate = probe.cannot_validate();
        }
        let changed = state.last != Some(kind);
        state.last = Some(kind);
        crate::telemetry::dnssec_ok(kind == Kind::Validates);
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;

    fn unanswered() -> DnssecProbe {
        DnssecProbe::Unanswered("no answer within 5s".into())
    }

    #[test]
    fn nothing_is_assumed_before_the_first_probe() {
        let status = DnssecStatus::new();
        assert!(!status.cannot_validate());
    }

    #[test]
    fn a_resolver_that_strips_or_does_not_validate_cannot_validate() {
        let status = DnssecStatus::new();
        assert!(status.record(&DnssecProbe::Strips));
        assert!(status.cannot_validate());
        assert!(status.record(&DnssecProbe::DoesNotValidate("bogus".into())));
        assert!(status.cannot_validate());
        // Fixed: lookups that fail are outages again.
        assert!(status.record(&DnssecProbe::Validates));
        assert!(!status.cannot_validate());
    }

    #[test]
    fn only_a_change_of_kind_is_a_change() {
        let status = DnssecStatus::new();
        assert!(status.record(&DnssecProbe::Validates), "the first finding");
        assert!(!status.record(&DnssecProbe::Validates));
        assert!(status.record(&DnssecProbe::Strips));
        assert!(!status.record(&DnssecProbe::Strips));
        // Another reason of the same kind is no news.
        assert!(status.record(&DnssecProbe::DoesNotValidate("clock".into())));
        assert!(!status.record(&DnssecProbe::DoesNotValidate("other".into())));
    }

    #[test]
    fn silence_changes_nothing_about_what_was_known() {
        let status = DnssecStatus::new();
        status.record(&DnssecProbe::Strips);
        assert!(
            status.record(&unanswered()),
            "logged: the resolver went quiet"
        );
        assert!(status.cannot_validate(), "still known to strip");
        let status = DnssecStatus::new();
        status.record(&DnssecProbe::Validates);
        status.record(&unanswered());
        assert!(!status.cannot_validate(), "an outage, as before");
        let status = DnssecStatus::new();
        status.record(&unanswered());
        assert!(!status.cannot_validate(), "nothing known: an outage");
    }

    #[test]
    fn the_gauge_is_1_only_while_the_resolver_validates() {
        const GAUGE: &str = "sealgate_dns_dnssec_ok";
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let status = DnssecStatus::new();
        let gauge = |probe: DnssecProbe| {
            metrics::with_local_recorder(&recorder, || status.record(&probe));
            let text = handle.render();
            text.lines()
                .find(|l| l.starts_with(GAUGE))
                .unwrap_or_else(|| panic!("no {GAUGE} in:\n{text}"))
                .to_string()
        };
        assert_eq!(gauge(DnssecProbe::Validates), format!("{GAUGE} 1"));
        assert_eq!(gauge(DnssecProbe::Strips), format!("{GAUGE} 0"));
        assert_eq!(gauge(DnssecProbe::Validates), format!("{GAUGE} 1"));
        assert_eq!(gauge(unanswered()), format!("{GAUGE} 0"));
    }

    #[test]
    fn the_explanation_names_the_fix() {
        let text = DnssecProbe::Strips.explain();
        assert!(text.contains("strips DNSSEC"), "{text}");
        assert!(text.contains("[lookup] nameservers"), "{text}");
        assert!(text.contains("unbound"), "{text}");
        assert!(text.contains("127.0.0.11"), "{text}");
    }
}
