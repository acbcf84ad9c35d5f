//! CQL (discrete): not written yet.
