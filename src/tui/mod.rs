//! The staff-facing terminal UI (ratatui): [`model`] holds the state and its update rules
//! (keys and daemon events in, daemon commands out, no terminal), [`view`] draws it.
//! The run loop that connects them to a real terminal and to the daemon comes with
//! `--ui tui`.

pub mod model;
pub mod view;
