//! TODO(helper): archive
