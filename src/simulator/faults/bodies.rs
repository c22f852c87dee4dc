//! The bodies of faulty answers: the vendor's error bodies, valid JSON reshaped or emptied, and an
//! oversized body made as it is sent.

use serde_json::{Value, json};

use crate::simulator::render;

/// An `oversized` body is sent in chunks of this size, each made when hyper asks for it.
const OVERSIZED_CHUNK: usize = 64 * 1024;

/// The vendor-style error code and message of a simulated error status.
pub(crate) fn error_body(status: u16) -> Value {
    let (code, message) = match status {
        429 => (
            "APIG.0308",
            "The throttling threshold has been reached (simulated)",
        ),
        502 => ("APIG.0202", "Backend unavailable (simulated)"),
        503 => ("APIG.0203", "Service temporarily unavailable (simulated)"),
        504 => ("APIG.0201", "Backend timeout (simulated)"),
        _ => (
            "DEVPIPE.00011500",
            "服务内部错误 (simulated internal error)",
        ),
    };
    render::error(code, message)
}

/// `body` with a valid but wrong shape: an array goes into an object, anything else into an array.
pub(crate) fn wrong_shape(body: Value) -> Value {
    match body {
        Value::Array(_) => json!({ "data": body }),
        other => Value::Array(vec![other]),
    }
}

/// `body` with nothing in it: `[]` for an array, and for an object every list emptied and
/// `total` 0.
pub(crate) fn emptied(body: Value) -> Value {
    match body {
        Value::Array(_) => Value::Array(Vec::new()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, value)| {
                    let value = match value {
                        Value::Array(_) => Value::Array(Vec::new()),
                        _ if key == "total" => json!(0),
                        other => other,
                    };
                    (key, value)
                })
                .collect(),
        ),
        other => other,
    }
}

/// The body of an `oversized` answer: a JSON string of `size` bytes (for 2 bytes or more) in
/// chunks made one at a time as the stream is polled, so the whole body is never in memory.
pub(crate) fn oversized_chunks(size: u64) -> impl futures_util::Stream<Item = bytes::Bytes> {
    // Chunks in the middle share one filler; the first and the last carry the quotes.
    let filler = bytes::Bytes::from(
        b"oversized answer (simulated) "
            .iter()
            .copied()
            .cycle()
            .take(OVERSIZED_CHUNK)
            .collect::<Vec<u8>>(),
    );
    futures_util::stream::unfold(0u64, move |sent| {
        let left = size.saturating_sub(sent);
        let len = usize::try_from(left).map_or(OVERSIZED_CHUNK, |left| left.min(OVERSIZED_CHUNK));
        let next = (len > 0).then(|| {
            let (first, last) = (sent == 0, left == len as u64);
            let mut chunk = filler.slice(..len);
            if first || last {
                let mut edged = chunk.to_vec();
                if first {
                    edged[0] = b'"';
                }
                if last {
                    edged[len - 1] = b'"';
                }
                chunk = bytes::Bytes::from(edged);
            }
            (chunk, sent + len as u64)
        });
        std::future::ready(next)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn oversized_bodies_are_json_strings_made_chunk_by_chunk() {
        use futures_util::StreamExt;
        for size in [
            2,
            10,
            OVERSIZED_CHUNK as u64,
            3 * OVERSIZED_CHUNK as u64 + 7,
        ] {
            let chunks: Vec<bytes::Bytes> = oversized_chunks(size).collect().await;
            assert!(chunks.iter().all(|c| c.len() <= OVERSIZED_CHUNK));
            let body = chunks.concat();
            assert_eq!(body.len() as u64, size);
            let text: String = serde_json::from_slice(&body).expect("a JSON string");
            assert_eq!(text.len() as u64, size - 2);
        }
        assert_eq!(oversized_chunks(0).count().await, 0);
        // Made as polled: taking the first chunk of a huge body is instant.
        let first = oversized_chunks(u64::MAX).next().await.expect("a chunk");
        assert_eq!(first.len(), OVERSIZED_CHUNK);
    }

    #[test]
    fn bodies_are_emptied_or_reshaped() {
        let list = json!({"offset": 0, "limit": 20, "total": 7, "pipeline_runs": [{"a": 1}]});
        assert_eq!(
            emptied(list.clone()),
            json!({"offset": 0, "limit": 20, "total": 0, "pipeline_runs": []})
        );
        assert_eq!(emptied(json!([1, 2])), json!([]));
        assert_eq!(wrong_shape(json!([1])), json!({"data": [1]}));
        assert_eq!(wrong_shape(list.clone()), json!([list]));
    }
}
