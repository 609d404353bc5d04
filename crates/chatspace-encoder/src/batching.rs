//! Cutting a unit of texts into inference batches and putting the results back in order.
//!
//! Texts are sorted by token count (longest first) so that each batch holds rows of similar
//! length, cut into batches within [`BatchLimits`] (rows, padded tokens, and on GPUs rows ×
//! seq²), and each batch is padded only to its own longest row. [`scatter`] returns each vector
//! to its text's place in the unit.

use crate::config::Side;
use crate::limits::BatchLimits;
use crate::tokenize::Tokenized;

/// Groups row indices into batches: sorted by `lengths` (longest first, ties in input order),
/// each within `limits`: at most `rows` rows, `tokens` padded tokens (rows × the batch's
/// longest row) and `scores` rows × longest row²; a batch always takes at least one row.
pub fn plan(lengths: &[usize], limits: &BatchLimits) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
    let max_rows = limits.rows.max(1);
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    for i in order {
        // Sorted longest first: the batch's first row sets its padded length.
        let longest = current.first().map_or(lengths[i], |&f| lengths[f]).max(1);
        let rows = current.len() + 1;
        let fits_tokens = limits.tokens.is_none_or(|t| rows * longest <= t);
        let fits_scores = limits
            .scores
            .is_none_or(|s| (rows as u64).saturating_mul((longest as u64).pow(2)) <= s);
        if !current.is_empty() && (current.len() == max_rows || !fits_tokens || !fits_scores) {
            batches.push(std::mem::take(&mut current));
        }
        current.push(i);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// One batch as the model takes it: row-major `[rows, seq]` tensors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Padded {
    /// Number of rows.
    pub rows: usize,
    /// Padded length of every row.
    pub seq: usize,
    /// Token ids; padding positions hold the pad id.
    pub ids: Vec<i64>,
    /// Token type ids; 0 at padding positions.
    pub type_ids: Vec<i64>,
    /// 1 for real tokens, 0 for padding.
    pub mask: Vec<i64>,
    /// Position of each token among its row's real tokens (`cumsum(mask) - 1`, at least 0), so
    /// that left padding does not shift positions.
    pub positions: Vec<i64>,
}

impl Padded {
    /// Real (unpadded) tokens in the batch.
    pub fn real_tokens(&self) -> u64 {
        self.mask.iter().map(|&m| m as u64).sum()
    }
}

/// Pads `rows` to the longest of them (at least one position), on `side`.
pub fn pad(rows: &[&Tokenized], side: Side, pad_id: u32) -> Padded {
    let seq = rows.iter().map(|t| t.ids.len()).max().unwrap_or(0).max(1);
    let n = rows.len() * seq;
    let mut p = Padded {
        rows: rows.len(),
        seq,
        ids: vec![i64::from(pad_id); n],
        type_ids: vec![0; n],
        mask: vec![0; n],
        positions: vec![0; n],
    };
    for (r, t) in rows.iter().enumerate() {
        let len = t.ids.len();
        let start = r * seq + if side == Side::Left { seq - len } else { 0 };
        for (k, (&id, &ty)) in t.ids.iter().zip(&t.type_ids).enumerate() {
            p.ids[start + k] = i64::from(id);
            p.type_ids[start + k] = i64::from(ty);
            p.mask[start + k] = 1;
            p.positions[start + k] = k as i64;
        }
        // Right padding: positions after the row keep counting at `len - 1`, as cumsum does.
        if side == Side::Right && len > 0 {
            p.positions[r * seq + len..(r + 1) * seq].fill(len as i64 - 1);
        }
    }
    p
}

/// Copies the `dim`-wide vectors of one batch (in batch order) to their rows' places in `out`.
pub fn scatter(out: &mut [f32], dim: usize, batch: &[usize], vectors: &[f32]) {
    for (k, &row) in batch.iter().enumerate() {
        out[row * dim..(row + 1) * dim].copy_from_slice(&vectors[k * dim..(k + 1) * dim]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rows: usize, tokens: Option<usize>) -> BatchLimits {
        BatchLimits {
            rows,
            tokens,
            scores: None,
        }
    }

    fn tok(ids: &[u32]) -> Tokenized {
        Tokenized {
            ids: ids.to_vec(),
            type_ids: vec![0; ids.len()],
            truncated: false,
        }
    }

    #[test]
    fn plan_sorts_longest_first_and_caps_rows() {
        let batches = plan(&[3, 9, 1, 9, 5], &limits(2, None));
        assert_eq!(batches, vec![vec![1, 3], vec![4, 0], vec![2]]);
        assert!(plan(&[], &limits(4, None)).is_empty());
    }

    #[test]
    fn plan_fills_batches_to_a_token_budget() {
        // Budget 20: [9, 9] pads to 18; 5+3+1 pads to 15 (and a 4th row would not fit anyway).
        let batches = plan(&[3, 9, 1, 9, 5], &limits(32, Some(20)));
        assert_eq!(batches, vec![vec![1, 3], vec![4, 0, 2]]);
        // A row longer than the budget still gets a batch of its own.
        assert_eq!(
            plan(&[50, 2], &limits(32, Some(20))),
            vec![vec![0], vec![1]]
        );
        for b in plan(&[7; 100], &limits(32, Some(64))) {
            assert!(b.len() * 7 <= 64);
        }
    }

    #[test]
    fn plan_cuts_long_rows_by_rows_times_seq_squared() {
        // 16,384 tokens fit 2 rows of 8,192, but a cap of 2 × 4,096² rows × seq² leaves
        // 8,192-token rows alone and 4,096-token batches at two rows; shorter ones fill up.
        let cap = 2 * 4_096u64 * 4_096;
        let lim = BatchLimits {
            rows: 512,
            tokens: Some(16_384),
            scores: Some(cap),
        };
        let lengths = [
            8_192, 8_192, 4_096, 4_096, 4_096, 2_048, 2_048, 2_048, 2_048, 100, 100,
        ];
        let batches = plan(&lengths, &lim);
        assert_eq!(
            batches,
            vec![
                vec![0],
                vec![1],
                vec![2, 3],
                vec![4, 5],
                vec![6, 7, 8, 9, 10],
            ]
        );
        for b in &batches {
            let longest = b.iter().map(|&i| lengths[i]).max().unwrap() as u64;
            assert!(
                b.len() == 1 || b.len() as u64 * longest * longest <= cap,
                "{b:?}"
            );
            assert!(b.len() as u64 * longest <= 16_384, "{b:?}");
        }
        // Without the cap, the token budget alone pairs the 8,192-token rows.
        let no_cap = plan(
            &lengths,
            &BatchLimits {
                scores: None,
                ..lim
            },
        );
        assert_eq!(no_cap[0], vec![0, 1]);
    }

    #[test]
    fn plan_covers_every_row_once() {
        let lengths: Vec<usize> = (0..37).map(|i| (i * 7919) % 13).collect();
        let mut seen: Vec<usize> = plan(&lengths, &limits(5, Some(24)))
            .into_iter()
            .flatten()
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..37).collect::<Vec<_>>());
    }

    #[test]
    fn right_padding() {
        let (a, b) = (tok(&[5, 6, 7]), tok(&[8]));
        let p = pad(&[&a, &b], Side::Right, 0);
        assert_eq!((p.rows, p.seq), (2, 3));
        assert_eq!(p.ids, [5, 6, 7, 8, 0, 0]);
        assert_eq!(p.mask, [1, 1, 1, 1, 0, 0]);
        assert_eq!(p.positions, [0, 1, 2, 0, 0, 0]);
        assert_eq!(p.real_tokens(), 4);
    }

    #[test]
    fn left_padding_keeps_positions_of_real_tokens() {
        let (a, b) = (tok(&[5, 6, 7]), tok(&[8, 9]));
        let p = pad(&[&a, &b], Side::Left, 2);
        assert_eq!(p.ids, [5, 6, 7, 2, 8, 9]);
        assert_eq!(p.mask, [1, 1, 1, 0, 1, 1]);
        assert_eq!(p.positions, [0, 1, 2, 0, 0, 1]);
    }

    #[test]
    fn empty_rows_still_get_one_position() {
        let e = tok(&[]);
        let p = pad(&[&e], Side::Right, 0);
        assert_eq!((p.seq, p.mask.as_slice()), (1, &[0][..]));
    }

    #[test]
    fn scatter_restores_unit_order() {
        let mut out = vec![0.0; 6];
        scatter(&mut out, 2, &[2, 0], &[20.0, 21.0, 0.0, 1.0]);
        scatter(&mut out, 2, &[1], &[10.0, 11.0]);
        assert_eq!(out, [0.0, 1.0, 10.0, 11.0, 20.0, 21.0]);
    }
}
