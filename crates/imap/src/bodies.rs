//! The one read API for message bodies: FETCH, SEARCH and anything else that
//! needs a message's bytes come here.
//!
//! A replica may hold a message's record before its body has arrived from the
//! site that accepted it. The rule this module keeps in one place: a site never
//! answers from a body it lacks. [`BodyReader::prepare`] first asks the cluster
//! to bring the bodies to this site (`Cluster::ensure_bodies`, which waits a
//! bounded time and fetches from peers); a body still missing afterwards is a
//! [`BodyUnavailable`], answered with [`unavailable`] (`NO [UNAVAILABLE]`), so the
//! client retries instead of getting an answer that silently leaves a message out.
//!
//! This module must never read a body that was not first passed to `prepare`,
//! and never read outside [`crate::blocking::store_read`].

use std::sync::Arc;

use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::response::Status;
use maildr_cluster::Cluster;
use maildr_store::Store;
use maildr_types::BlobHash;

use crate::reply::{no, other_code};

/// A message body is not on this site and could not be fetched in time.
#[derive(Debug, thiserror::Error)]
#[error("message body {hash} is not available on this site")]
pub(crate) struct BodyUnavailable {
    pub hash: BlobHash,
}

/// Reads bodies that were made present on this site.
pub(crate) struct BodyReader {
    store: Arc<Store>,
}

impl BodyReader {
    /// Make sure these bodies are on this site (waiting as long as the cluster's
    /// body wait allows), then hand out a reader for them.
    pub(crate) async fn prepare(cluster: &Cluster, hashes: &[BlobHash]) -> BodyReader {
        if let Err(e) = cluster.ensure_bodies(hashes).await {
            // The read itself reports each body that is still missing.
            tracing::debug!(error = %e, "message bodies not all on this site");
        }
        BodyReader { store: cluster.store() }
    }

    /// The stored bytes of one body. Call inside [`crate::blocking::store_read`].
    pub(crate) fn read(&self, hash: &BlobHash) -> Result<Vec<u8>, BodyUnavailable> {
        self.store.blobs().get(hash).map_err(|e| {
            tracing::debug!(error = %e, %hash, "reading a message body failed");
            BodyUnavailable { hash: *hash }
        })
    }
}

/// The reply to a command that needed a body this site does not have.
pub(crate) fn unavailable(tag: &Tag<'static>) -> Status<'static> {
    no(tag, Some(other_code("UNAVAILABLE")), "some message bodies are not available here yet; try again")
}
