//! The organization's own keys: the Organization certificate ([`ca`]).

pub mod ca;
