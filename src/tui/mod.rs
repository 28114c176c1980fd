//! The staff-facing terminal UI (ratatui): [`model`] holds the state and its update rules
//! (keys and daemon events in, daemon commands out, no terminal), [`view`] draws it, and
//! [`run`] connects both to a real terminal and to the daemon's loop (`--ui tui`).

pub mod model;
pub mod run;
pub mod view;
