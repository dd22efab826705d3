//! TODO(helper): audit
