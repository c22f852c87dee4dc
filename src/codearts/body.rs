//! Reading an answer's body under `codearts.max_response_bytes`, shared by the client and the
//! IAM token fetch: a body over the cap is abandoned, never buffered whole.

use bytes::Bytes;

/// Why the body of an answer could not be read.
pub(super) enum BodyError {
    /// The connection broke or timed out mid-body.
    Transport(reqwest::Error),
    /// The body is over the cap: its announced `Content-Length`, or the bytes read so far.
    TooLarge(u64),
}

/// Reads the body of `response` as it arrives, up to `limit` bytes. A body announced or found
/// to be larger is abandoned: dropping the response closes its connection, unread.
pub(super) async fn read_body(
    mut response: reqwest::Response,
    limit: u64,
) -> Result<Bytes, BodyError> {
    let announced = response.content_length();
    if let Some(size) = announced.filter(|&size| size > limit) {
        return Err(BodyError::TooLarge(size));
    }
    let mut body = Vec::with_capacity(to_usize(announced.unwrap_or(0)));
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        let size = body.len() as u64 + chunk.len() as u64;
        if size > limit {
            return Err(BodyError::TooLarge(size));
        }
        if size > body.capacity() as u64 {
            // Doubling as a Vec would, but never past the cap.
            let grown = (body.capacity() as u64)
                .saturating_mul(2)
                .max(size)
                .min(limit);
            body.reserve_exact(to_usize(grown) - body.len());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(body))
}

/// A byte count as `usize`, saturating (only a 32-bit target could overflow).
fn to_usize(bytes: u64) -> usize {
    usize::try_from(bytes).unwrap_or(usize::MAX)
}
