//! The seam where recipients are grouped by treatment.
//!
//! One client transaction becomes one next-hop transaction per group. The gateway's
//! classifier is [`crate::gateway::transform::Transform`], which carries out each recipient's
//! policy verdict; the simple ones here serve tests of the fan-out itself. The server
//! is built with a classifier; handlers never ask which one.

use crate::mail::envelope::Envelope;
use crate::mail::message::Message;
use crate::policy::Verdict;

/// Recipients that share one treatment, and the message they get.
#[derive(Debug, Clone)]
pub struct Group {
    /// A short name for logs ("clear", "pgp", ...).
    pub treatment: String,
    /// Indexes into the envelope's recipients.
    pub recipients: Vec<usize>,
    /// The message as this group gets it.
    pub message: Message,
    /// When set, the group is not handed on: its recipients fail with this reply (say,
    /// encryption was required and failed).
    pub refusal: Option<crate::smtp::reply::Reply>,
}

/// Splits a transaction's recipients into groups. Every recipient must be in exactly
/// one group.
pub trait Classifier: Send + Sync + 'static {
    /// `verdicts[i]` is the policy's verdict for `envelope.recipients[i]`.
    fn classify(&self, envelope: &Envelope, message: &Message, verdicts: &[Verdict]) -> Vec<Group>;

    /// Whether classifying may take long (encryption, decryption). The gateway then
    /// runs it on the blocking pool; otherwise inline, because the hand-off to another
    /// thread costs more than a plain message's whole classification. Answering must
    /// be cheap.
    fn is_heavy(&self, _verdicts: &[Verdict]) -> bool {
        true
    }
}

/// Everyone gets the message as it is, in one next-hop transaction, whatever the
/// policy says.
#[derive(Debug, Default, Clone, Copy)]
pub struct OneGroup;

impl Classifier for OneGroup {
    fn is_heavy(&self, _verdicts: &[Verdict]) -> bool {
        false
    }

    fn classify(&self, envelope: &Envelope, message: &Message, _: &[Verdict]) -> Vec<Group> {
        vec![Group {
            treatment: "clear".into(),
            recipients: (0..envelope.recipients.len()).collect(),
            message: message.clone(),
            refusal: None,
        }]
    }
}

/// Each recipient in a group of its own. It exercises the fan-out, the spool and the
/// DSN path before any real treatment exists, and is what the tests use.
#[derive(Debug, Default, Clone, Copy)]
pub struct OneGroupPerRecipient;

impl Classifier for OneGroupPerRecipient {
    fn is_heavy(&self, _verdicts: &[Verdict]) -> bool {
        false
    }

    fn classify(&self, envelope: &Envelope, message: &Message, _: &[Verdict]) -> Vec<Group> {
        (0..envelope.recipients.len())
            .map(|i| Group {
                treatment: format!("split-{i}"),
                recipients: vec![i],
                message: message.clone(),
                refusal: None,
            })
            .collect()
    }
}
