//! ulvs-agent: a declarative, Terraform-style agent for ulvsd — desired state in HCL (or JSON),
//! a pure planner, atomic generation-checked apply, health checks and a drift-repairing watch
//! loop.
//!
//! # Layout
//! - [`config`]: the file format; parsing with positions, `variable`/`locals` evaluation,
//!   decoding and validation into a [`config::Config`]. Errors are `file:line:column`.
//! - [`model`]: services and real servers as the agent sees them, normalised so that desired
//!   and observed values compare equal exactly when nothing needs to change.
//! - [`desired`]: configuration + health -> the desired live state (drained servers, quorum,
//!   sorry server). Pure.
//! - [`mod@plan`]: the planner, `plan(desired, observed) -> Plan`, and its rendering. Pure.
//! - [`client`]: the edge to ulvsd (the only module naming protobuf types): reads the live
//!   state, executes a plan as one `Apply` batch with the plan's generation.
//! - [`health`]: the health checks, feeding a [`desired::HealthView`].
//!
//! # Invariants
//! 1. The planner and [`desired::Desired::from_config`] do no I/O: values in, values out.
//! 2. Apply makes no decisions: a [`plan::Plan`] is executed as it is, in one atomic batch whose
//!    `expected_generation` is the generation the plan was computed against, so a stale plan
//!    is refused and nothing is half-applied.
//! 3. A weight, threshold, scheduler or flag change is an edit in place; only a change of an
//!    object's identity (service protocol/address/port, real-server address/port) deletes it.
//! 4. Only services carrying `owner_label = name` are touched; every other service is left alone
//!    and counted in the plan.
//! 5. A bad file changes nothing: it is refused before the daemon is contacted.

pub mod client;
pub mod config;
pub mod desired;
pub mod health;
pub mod model;
pub mod plan;

pub use config::{Config, load_file, parse_str};
pub use desired::{Desired, HealthView};
pub use model::Observed;
pub use plan::{Plan, plan};
