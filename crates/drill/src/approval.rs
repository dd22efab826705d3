//! TODO(helper): approval
