//! Run reports.
