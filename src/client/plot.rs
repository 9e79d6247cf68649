//! SVG plots of a load run (placeholder until written).
use std::path::Path;

use super::ClientError;
use super::report::LoadReport;

/// Writes the report's plots as one SVG file.
pub fn write_svg(_report: &LoadReport, _path: &Path) -> Result<(), ClientError> {
    Ok(())
}
