//! Simulator of the CodeArts Pipeline and IAM APIs (placeholder, being written).
