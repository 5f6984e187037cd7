//! A small decoder of upstream Server-Sent Events: bytes in, `(event, data)` frames out.

/// One SSE frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines, joined by newlines.
    pub data: String,
}

/// Incremental decoder: feed it chunks, take complete frames.
#[derive(Debug, Default)]
pub struct Decoder {
    buffer: Vec<u8>,
    event: Option<String>,
    data: Vec<String>,
}

/// Longest line accepted, so a broken upstream cannot grow the buffer without bound.
const MAX_LINE: usize = 16 << 20;

impl Decoder {
    /// Feeds bytes; returns the frames they complete.
    ///
    /// # Errors
    /// When a line is longer than 16 MiB or not UTF-8.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Frame>, String> {
        self.buffer.extend_from_slice(bytes);
        let mut frames = Vec::new();
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line =
                String::from_utf8(line).map_err(|_| "upstream sent a non-UTF-8 event line".to_owned())?;
            if let Some(frame) = self.line(&line) {
                frames.push(frame);
            }
        }
        if self.buffer.len() > MAX_LINE {
            return Err("upstream sent an event line longer than 16 MiB".into());
        }
        Ok(frames)
    }

    fn line(&mut self, line: &str) -> Option<Frame> {
        if line.is_empty() {
            if self.data.is_empty() && self.event.is_none() {
                return None;
            }
            let data = std::mem::take(&mut self.data).join("\n");
            return Some(Frame { event: self.event.take(), data });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => self.data.push(value.to_owned()),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_across_chunks() {
        let mut d = Decoder::default();
        assert!(d.feed(b"event: message_start\nda").unwrap().is_empty());
        let frames = d.feed(b"ta: {\"a\":1}\r\n\r\n: ping\n\ndata: [DONE]\n\n").unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0], Frame { event: Some("message_start".into()), data: "{\"a\":1}".into() });
        assert_eq!(frames[1].data, "[DONE]");
    }
}
