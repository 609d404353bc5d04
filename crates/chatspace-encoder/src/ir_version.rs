//! Loading models whose ONNX IR version is newer than the ONNX Runtime in use.
//!
//! Exporters stamp a model with the newest IR version their `onnx` package knows, even when the
//! graph uses nothing from it. ONNX Runtime refuses such a file ("Unsupported model IR version:
//! 14, max supported IR version: 13"). We then rewrite only the `ir_version` field (field 1 of
//! `ModelProto`) to the runtime's maximum and load the bytes from memory, with a warning; if
//! the graph really needs something newer, that load fails and the original error is reported.

/// The (model, supported) IR versions named in ONNX Runtime's refusal, if `message` is one.
pub fn unsupported_ir(message: &str) -> Option<(u64, u64)> {
    let number_after = |key: &str| -> Option<u64> {
        let rest = &message[message.find(key)? + key.len()..];
        let digits: String = rest
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    };
    Some((
        number_after("Unsupported model IR version:")?,
        number_after("max supported IR version:")?,
    ))
}

fn read_varint(bytes: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*pos)?;
        *pos += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn write_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// `model` with its top-level `ir_version` set to `version`; `None` if the bytes are not a
/// protobuf message with that field.
pub fn with_ir_version(model: &[u8], version: u64) -> Option<Vec<u8>> {
    let mut pos = 0;
    while pos < model.len() {
        let field_start = pos;
        let key = read_varint(model, &mut pos)?;
        let (field, wire) = (key >> 3, key & 7);
        let value_start = pos;
        match wire {
            0 => {
                read_varint(model, &mut pos)?;
            }
            1 => pos += 8,
            2 => {
                let len = read_varint(model, &mut pos)? as usize;
                pos = pos.checked_add(len)?;
            }
            5 => pos += 4,
            _ => return None,
        }
        if pos > model.len() {
            return None;
        }
        if field == 1 && wire == 0 {
            let mut out = Vec::with_capacity(model.len());
            out.extend_from_slice(&model[..value_start]);
            write_varint(version, &mut out);
            out.extend_from_slice(&model[pos..]);
            return Some(out);
        }
        debug_assert!(pos > field_start);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_runtime_refusal() {
        let msg = "Load model from m.onnx failed:/src/model.cc:256 onnxruntime::Model::Model(...) Unsupported model IR version: 14, max supported IR version: 13";
        assert_eq!(unsupported_ir(msg), Some((14, 13)));
        assert_eq!(unsupported_ir("Protobuf parsing failed."), None);
    }

    #[test]
    fn rewrites_only_the_ir_version() {
        // ir_version = 14, producer_name (field 2) = "x", then a field 7 blob.
        let model = [0x08, 14, 0x12, 1, b'x', 0x3a, 2, 0xaa, 0xbb];
        let out = with_ir_version(&model, 13).unwrap();
        assert_eq!(out, [0x08, 13, 0x12, 1, b'x', 0x3a, 2, 0xaa, 0xbb]);
        // A multi-byte varint value is replaced whole.
        let big = [0x12, 1, b'x', 0x08, 0x96, 0x01];
        assert_eq!(with_ir_version(&big, 9).unwrap(), [0x12, 1, b'x', 0x08, 9]);
    }

    #[test]
    fn refuses_non_protobuf() {
        assert_eq!(with_ir_version(&[0x12, 200], 13), None);
        assert_eq!(with_ir_version(&[], 13), None);
    }
}
