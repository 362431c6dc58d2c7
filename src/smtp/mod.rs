//! The SMTP protocol and nothing else: replies, the buffered connection, and the session
//! state machine. It knows nothing about keys, policy or next hops.

pub mod conn;
pub mod data;
pub mod reply;
pub mod session;
