//! From decisions to verdicts: key choice, no_key, decrypt keys, reject replies.

use time::OffsetDateTime;

use super::{decided, facts, policy};
use crate::keys::{KeyEntry, KeyKind, Source};
use crate::policy::verdict::{Circumstances, Lookup, Treatment, Verdict};

fn entry(kind: KeyKind, source: Source, fingerprint: &str) -> KeyEntry {
    KeyEntry::sample(kind, source, fingerprint)
}

fn verdict(text: &str, entries: &[KeyEntry], mailflow: bool, encrypted: Option<bool>) -> Verdict {
    verdict_after_lookup(text, entries, mailflow, encrypted, Lookup::Answered)
}

fn verdict_after_lookup(
    text: &str,
    entries: &[KeyEntry],
    mailflow: bool,
    encrypted: Option<bool>,
    lookup: Lookup,
) -> Verdict {
    let p = policy(text);
    // The chain the rules are on.
    let chain = if p.outbound.rules.is_empty() {
        &p.inbound
    } else {
        &p.outbound
    };
    let d = decided(chain, &facts("r@x.example", false, &[]), None);
    Verdict::new(
        chain,
        &d,
        &Circumstances {
            recipient: "r@x.example",
            entries,
            now: OffsetDateTime::now_utc(),
            allowed: crate::keys::Allowed {
                mailflow,
                unvalidated_smime: true,
            },
            authenticated_encryption: Default::default(),
            already_encrypted: encrypted,
            lookup,
        },
    )
}

#[test]
fn no_key_outcomes() {
    let rule = |no_key: &str| {
        format!("[[rule]]\nname = \"e\"\nchain = \"outbound\"\naction = \"encrypt\"\n{no_key}\n")
    };
    let v = verdict(&rule(""), &[], false, None);
    let Treatment::Refuse(reply) = &v.treatment else {
        panic!("{v:?}")
    };
    assert_eq!((reply.code, reply.status()), (550, "5.7.1".to_string()));
    assert!(reply.text.contains("r@x.example"), "{reply}");

    let v = verdict(&rule("no_key = \"defer\""), &[], false, None);
    let Treatment::Refuse(reply) = &v.treatment else {
        panic!("{v:?}")
    };
    assert_eq!((reply.code, reply.status()), (451, "4.7.1".to_string()));

    let v = verdict(&rule("no_key = \"send_clear\""), &[], false, None);
    assert_eq!(v.treatment, Treatment::Pass);
    assert_eq!(v.note, Some("no usable key: sent in clear"));
    assert_eq!(v.rule.as_deref(), Some("e"));
}

/// Issue 17: "no usable key" when the rule wants S/MIME and the recipient has an
/// OpenPGP key sent senders looking for a key that was there.
#[test]
fn the_no_key_refusal_names_the_kind_of_key_the_rule_wants() {
    use KeyKind::*;
    let rule =
        |extra: &str| format!("[[rule]]\nchain = \"outbound\"\naction = \"encrypt\"\n{extra}\n");
    let refusal =
        |text: &str, entries: &[KeyEntry]| match verdict(text, entries, false, None).treatment {
            Treatment::Refuse(reply) => reply,
            other => panic!("{other:?}"),
        };
    let pgp_only = [entry(Pgp, Source::Admin, "P1")];
    let smime_only = [entry(Smime, Source::Admin, "S1")];
    let reply = refusal(&rule("format = \"smime\""), &pgp_only);
    assert_eq!(
        reply.to_string(),
        "550 5.7.1 encryption required, but there is no usable S/MIME certificate for r@x.example"
    );
    let reply = refusal(&rule("format = \"pgp\""), &smime_only);
    assert_eq!(
        reply.to_string(),
        "550 5.7.1 encryption required, but there is no usable OpenPGP key for r@x.example"
    );
    let reply = refusal(&rule(""), &[]);
    assert_eq!(
        reply.to_string(),
        "550 5.7.1 encryption required, but there is no usable key for r@x.example"
    );
    let reply = refusal(&rule("format = \"smime\"\nno_key = \"defer\""), &pgp_only);
    assert_eq!(
        reply.to_string(),
        "451 4.7.1 encryption required and no usable S/MIME certificate for r@x.example yet; try again later"
    );
}

#[test]
fn a_rule_words_its_no_key_refusal_and_the_code_stays() {
    let rule = |no_key: &str| {
        format!(
            "[[rule]]\nchain = \"outbound\"\naction = \"encrypt\"\n{no_key}\nno_key_text = \"write to it@example.com for a certificate\"\n"
        )
    };
    for (no_key, status) in [
        ("", "550 5.7.1"),
        ("no_key = \"reject\"", "550 5.7.1"),
        ("no_key = \"defer\"", "451 4.7.1"),
    ] {
        let Treatment::Refuse(reply) = verdict(&rule(no_key), &[], false, None).treatment else {
            panic!("{no_key}: not refused")
        };
        assert_eq!(
            reply.to_string(),
            format!("{status} write to it@example.com for a certificate"),
            "{no_key}"
        );
    }
    // A failed lookup is not "no key": its own reply, whatever the rule's text.
    let v = verdict_after_lookup(&rule(""), &[], false, None, Lookup::Unavailable);
    let Treatment::Refuse(reply) = v.treatment else {
        panic!("{v:?}")
    };
    assert_eq!(reply.status(), "4.4.3");
    assert!(reply.text.contains("key lookup"), "{reply}");
    // A continue rule's text carries over to the rule that decides.
    let carried = "[[rule]]\nchain = \"outbound\"\nno_key_text = \"no key, no mail\"\ncontinue = true\n\n[[rule]]\nchain = \"outbound\"\naction = \"encrypt\"\n";
    let Treatment::Refuse(reply) = verdict(carried, &[], false, None).treatment else {
        panic!("not refused")
    };
    assert_eq!(reply.to_string(), "550 5.7.1 no key, no mail");
}

#[test]
fn key_choice_format_and_mailflow() {
    use KeyKind::*;
    let keys = [
        entry(Smime, Source::Admin, "S1"),
        entry(Pgp, Source::Mailflow, "P1"),
    ];
    let encrypt = "[[rule]]\nchain = \"outbound\"\naction = \"encrypt\"\n";
    let chosen = |v: Verdict| match v.treatment {
        Treatment::Encrypt(key) => key.fingerprint,
        other => format!("{other:?}"),
    };
    // Mailflow keys count only when allowed. The source ranks before the format: a
    // mailflow PGP key (which a spoofed inbound mail can plant) never beats the admin's
    // S/MIME certificate, as it did when auto chose PGP first.
    assert_eq!(chosen(verdict(encrypt, &keys, false, None)), "S1");
    assert_eq!(chosen(verdict(encrypt, &keys, true, None)), "S1");
    let with = |extra: &str| format!("{encrypt}{extra}\n");
    assert_eq!(
        chosen(verdict(
            &with("use_mailflow_keys = true"),
            &keys,
            false,
            None
        )),
        "S1"
    );
    // The mailflow key is used when the rule asks for PGP and allows mailflow keys.
    assert_eq!(
        chosen(verdict(
            &with("format = \"pgp\"\nuse_mailflow_keys = true"),
            &keys,
            false,
            None
        )),
        "P1"
    );
    // Between keys of one rank, auto prefers PGP; a lookup ranks above mailflow.
    let ranked = [
        entry(Smime, Source::Admin, "S1"),
        entry(Pgp, Source::Admin, "P2"),
        entry(Pgp, Source::Lookup, "P3"),
    ];
    assert_eq!(chosen(verdict(encrypt, &ranked, true, None)), "P2");
    let lookups = [
        entry(Pgp, Source::Mailflow, "P1"),
        entry(Smime, Source::Lookup, "S4"),
    ];
    assert_eq!(chosen(verdict(encrypt, &lookups, true, None)), "S4");
    assert_eq!(
        chosen(verdict(
            &with("use_mailflow_keys = false"),
            &keys,
            true,
            None
        )),
        "S1"
    );
    assert_eq!(
        chosen(verdict(&with("format = \"smime\""), &keys, true, None)),
        "S1"
    );
    let v = verdict(&with("format = \"pgp\""), &keys, false, None);
    assert!(matches!(v.treatment, Treatment::Refuse(_)), "{v:?}");
    // Already encrypted: passed as it is, unless the rule says to encrypt again.
    let v = verdict(encrypt, &keys, false, Some(true));
    assert_eq!(v.treatment, Treatment::Pass);
    assert_eq!(
        chosen(verdict(
            &with("encrypt_again = true"),
            &keys,
            false,
            Some(true)
        )),
        "S1"
    );
}

#[test]
fn decrypt_and_reject_verdicts() {
    let mut retired = entry(KeyKind::Pgp, Source::Sckm, "OLD");
    retired.retired = true;
    let keys = [
        retired,
        entry(KeyKind::Pgp, Source::Sckm, "NEW"),
        entry(KeyKind::Pgp, Source::Admin, "PUB"),
    ];
    let decrypt = "[[rule]]\nchain = \"inbound\"\naction = \"decrypt\"\n";
    let v = verdict(decrypt, &keys, false, None);
    let Treatment::Decrypt(with) = v.treatment else {
        panic!()
    };
    let order: Vec<&str> = with.iter().map(|e| e.fingerprint.as_str()).collect();
    assert_eq!(order, ["NEW", "OLD"]);
    let v = verdict(decrypt, &[], false, None);
    assert_eq!(v.treatment, Treatment::Pass);
    // Only inbound mail is decrypted, whatever an outbound rule says.
    let outbound = decrypt.replace("inbound", "outbound");
    assert_eq!(
        verdict(&outbound, &keys, false, None).treatment,
        Treatment::Pass
    );

    let v = verdict(
        "[[rule]]\nchain = \"outbound\"\naction = \"reject\"\n",
        &[],
        false,
        None,
    );
    assert_eq!(
        v.treatment,
        Treatment::Refuse(crate::smtp::reply::REJECTED_BY_POLICY)
    );
    let v = verdict(
        "[[rule]]\nchain = \"inbound\"\nharvest = false\n",
        &[],
        false,
        None,
    );
    assert!(!v.harvest && v.rule.is_some());
    // Keys come from inbound mail only.
    let v = verdict(
        "[[rule]]\nchain = \"outbound\"\naction = \"pass\"\n",
        &[],
        false,
        None,
    );
    assert!(!v.harvest);
}

#[test]
fn lookup_offline_outcomes() {
    let rule = |extra: &str| {
        format!("[[rule]]\nname = \"e\"\nchain = \"outbound\"\naction = \"encrypt\"\n{extra}\n")
    };
    let offline =
        |extra: &str| verdict_after_lookup(&rule(extra), &[], false, None, Lookup::Unavailable);
    // A rule that requires encryption defers: a key may exist.
    for extra in ["", "no_key = \"reject\"", "no_key = \"defer\""] {
        let v = offline(extra);
        let Treatment::Refuse(reply) = &v.treatment else {
            panic!("{extra}: {v:?}")
        };
        assert_eq!(
            (reply.code, reply.status()),
            (451, "4.4.3".to_string()),
            "{extra}"
        );
        assert_eq!(v.note, Some("key lookup failed: deferred"));
    }
    // A rule that sends in clear without a key does so, unless it says otherwise.
    assert_eq!(
        offline("no_key = \"send_clear\"").treatment,
        Treatment::Pass
    );
    let v = offline("no_key = \"send_clear\"\nlookup_offline = \"defer\"");
    assert!(matches!(v.treatment, Treatment::Refuse(_)), "{v:?}");
    let v = offline("no_key = \"reject\"\nlookup_offline = \"send_clear\"");
    assert_eq!(v.treatment, Treatment::Pass);
    assert_eq!(v.note, Some("key lookup failed: sent in clear"));
    // A key in the cache is used whatever the lookup did.
    let key = entry(KeyKind::Pgp, Source::Admin, "K");
    let v = verdict_after_lookup(&rule(""), &[key], false, None, Lookup::Unavailable);
    assert!(matches!(v.treatment, Treatment::Encrypt(_)), "{v:?}");
}

/// While the resolver cannot validate DNSSEC, a failed lookup is no outage: `no_key`
/// answers at once, `lookup_offline` does not apply, and the reply says why.
#[test]
fn a_resolver_that_cannot_validate_lets_no_key_decide() {
    let rule = |extra: &str| {
        format!("[[rule]]\nname = \"e\"\nchain = \"outbound\"\naction = \"encrypt\"\n{extra}\n")
    };
    let blind =
        |extra: &str| verdict_after_lookup(&rule(extra), &[], false, None, Lookup::CannotValidate);
    let refusal = |v: &Verdict| match &v.treatment {
        Treatment::Refuse(reply) => reply.clone(),
        other => panic!("{other:?}"),
    };
    // The default no_key, "reject": refused for good, at once, whatever lookup_offline
    // says (it is about outages).
    for extra in [
        "",
        "no_key = \"reject\"",
        "lookup_offline = \"defer\"",
        "lookup_offline = \"send_clear\"",
    ] {
        let v = blind(extra);
        let reply = refusal(&v);
        assert_eq!(
            (reply.code, reply.status()),
            (550, "5.7.1".to_string()),
            "{extra}"
        );
        assert!(reply.text.contains("r@x.example"), "{reply}");
        assert!(
            reply.text.contains("resolver cannot validate DNSSEC"),
            "{reply}"
        );
        assert_eq!(v.note, Some("resolver cannot validate DNSSEC: rejected"));
    }
    // "defer" defers, as the rule asks, saying why.
    let v = blind("no_key = \"defer\"");
    let reply = refusal(&v);
    assert_eq!((reply.code, reply.status()), (451, "4.7.1".to_string()));
    assert!(reply.text.contains("validates DNSSEC"), "{reply}");
    assert_eq!(v.note, Some("resolver cannot validate DNSSEC: deferred"));
    // "send_clear" sends in clear, even with lookup_offline = "defer".
    for extra in [
        "no_key = \"send_clear\"",
        "no_key = \"send_clear\"\nlookup_offline = \"defer\"",
    ] {
        let v = blind(extra);
        assert_eq!(v.treatment, Treatment::Pass, "{extra}");
        assert_eq!(
            v.note,
            Some("resolver cannot validate DNSSEC: sent in clear")
        );
    }
    // A key in the cache is used whatever the resolver does.
    let key = entry(KeyKind::Pgp, Source::Admin, "K");
    let v = verdict_after_lookup(&rule(""), &[key], false, None, Lookup::CannotValidate);
    assert!(matches!(v.treatment, Treatment::Encrypt(_)), "{v:?}");
}

#[test]
fn aes_gcm_for_smime_as_the_setting_the_rule_and_the_harvested_capabilities_say() {
    use crate::policy::rule::AuthenticatedEncryption::{self, *};
    let gcm = |rule_field: &str, default: AuthenticatedEncryption, entry: &KeyEntry| {
        let p = policy(&format!(
            "[[rule]]\nchain = \"outbound\"\naction = \"encrypt\"\n{rule_field}\n"
        ));
        let d = decided(&p.outbound, &facts("r@x.example", false, &[]), None);
        let v = Verdict::new(
            &p.outbound,
            &d,
            &Circumstances {
                recipient: "r@x.example",
                entries: std::slice::from_ref(entry),
                now: OffsetDateTime::now_utc(),
                allowed: crate::keys::Allowed::EVERY_SOURCE,
                authenticated_encryption: default,
                already_encrypted: Some(false),
                lookup: Default::default(),
            },
        );
        assert!(matches!(v.treatment, Treatment::Encrypt(_)), "{v:?}");
        v.smime_aes_gcm
    };
    let mut capable = entry(KeyKind::Smime, Source::Mailflow, "S1");
    capable.reads_aes_gcm = true;
    let silent = entry(KeyKind::Smime, Source::Admin, "S2");
    let mut pgp = entry(KeyKind::Pgp, Source::Admin, "P1");
    pgp.reads_aes_gcm = true;

    // The setting alone.
    assert!(!gcm("", Never, &capable));
    assert!(gcm("", WhenCapable, &capable));
    assert!(!gcm("", WhenCapable, &silent));
    assert!(gcm("", Always, &silent));
    // A rule overrides it, either way.
    let always = "smime_authenticated_encryption = \"always\"";
    let never = "smime_authenticated_encryption = \"never\"";
    let when = "smime_authenticated_encryption = \"when_capable\"";
    assert!(gcm(always, Never, &silent));
    assert!(!gcm(never, Always, &capable));
    assert!(gcm(when, Never, &capable) && !gcm(when, Always, &silent));
    // OpenPGP has nothing of the kind.
    assert!(!gcm(always, Always, &pgp));

    let loaded = super::load(
        "[[rule]]\nchain = \"outbound\"\naction = \"encrypt\"\nsmime_authenticated_encryption = \"gcm\"\n",
    );
    let errors: Vec<String> = loaded.errors().map(|p| p.to_string()).collect();
    assert!(
        errors.iter().any(|e| e.contains("50-test.toml:4")
            && e.contains("smime_authenticated_encryption")
            && e.contains("when_capable")),
        "{errors:?}"
    );
}
