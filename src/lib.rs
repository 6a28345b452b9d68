//! whatstat: analytics for WhatsApp Business messaging, answered from rollups.

#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod demo;
pub mod engine;
#[doc(hidden)]
pub mod fuzzing;
pub mod import;
pub mod secrets;
pub mod store;
pub mod telemetry;
