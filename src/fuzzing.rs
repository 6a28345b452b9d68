//! What the fuzz targets in `fuzz/` call that the library does not otherwise expose: the
//! parsing of a `POST /api/events` body, without a server or a store. Not a stable API.

use crate::engine::event::{Admission, Event};
use crate::engine::ingest::IngestReport;
use crate::engine::{EngineError, EventsBody};

/// What `POST /api/events` makes of a body before anything is written: the valid events
/// with their index in the request and the ignored ones in the report, or every error.
pub fn parse_events(
    body: EventsBody<'_>,
    admission: &Admission,
) -> Result<(Vec<(usize, Event)>, IngestReport), EngineError> {
    crate::engine::parse_events(body, admission)
}
