//! Isolating the rows of a suspect job: bisection bookkeeping, free of processes.

use super::*;

/// One job being split down to its failing rows: the row ranges still to send alone (each
/// failing range is split in halves, the first half next), and what came back. Pure
/// bookkeeping, so it is tested without processes.
#[derive(Debug)]
pub(super) struct Isolation {
    /// Ranges still to try; the next one last.
    pub(super) todo: Vec<Range<usize>>,
    /// The vectors of ranges that succeeded, by first row.
    pub(super) good: Vec<(usize, Vec<f32>)>,
    /// Rows that failed alone, with the reason.
    pub(super) failed: Vec<(usize, String)>,
    pub(super) tokens: u64,
    pub(super) padded_tokens: u64,
    pub(super) truncated: u32,
}

impl Isolation {
    /// A job of `rows` rows, to be sent whole but alone first.
    pub(super) fn new(rows: usize) -> Self {
        let mut todo = Vec::new();
        if rows > 0 {
            todo.push(0..rows);
        }
        Self {
            todo,
            good: Vec::new(),
            failed: Vec::new(),
            tokens: 0,
            padded_tokens: 0,
            truncated: 0,
        }
    }

    /// A job of `rows` rows that just failed as a whole for `reason`.
    pub(super) fn after_failure(rows: usize, reason: String) -> Self {
        let mut iso = Self::new(rows);
        iso.fail(reason);
        iso
    }

    /// The rows to send next (alone); `None` when every row is accounted for.
    pub(super) fn next(&self) -> Option<Range<usize>> {
        self.todo.last().cloned()
    }

    /// The rows of [`Isolation::next`] were embedded.
    pub(super) fn succeed(
        &mut self,
        vectors: Vec<f32>,
        tokens: u64,
        padded_tokens: u64,
        truncated: u32,
    ) {
        let rows = self.todo.pop().expect("a range was sent");
        self.good.push((rows.start, vectors));
        self.tokens += tokens;
        self.padded_tokens += padded_tokens;
        self.truncated += truncated;
    }

    /// The rows of [`Isolation::next`] failed: a single row is recorded as failed (and returned),
    /// more are split in halves.
    pub(super) fn fail(&mut self, reason: String) -> Option<usize> {
        let rows = self.todo.pop()?;
        if rows.len() == 1 {
            self.failed.push((rows.start, reason));
            return Some(rows.start);
        }
        let mid = rows.start + rows.len() / 2;
        self.todo.push(mid..rows.end);
        self.todo.push(rows.start..mid);
        None
    }

    /// The job's result: the good rows' vectors in order, and the failed rows.
    pub(super) fn finish<P>(mut self, job: Job<P>) -> Done<P> {
        debug_assert!(self.todo.is_empty());
        self.good.sort_by_key(|(start, _)| *start);
        self.failed.sort_by_key(|(row, _)| *row);
        Done {
            job,
            vectors: self.good.into_iter().flat_map(|(_, v)| v).collect(),
            tokens: self.tokens,
            padded_tokens: self.padded_tokens,
            truncated: self.truncated,
            failed: self.failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs an isolation against an encoder that fails every unit holding a row of `bad`; each
    /// row's "vector" is its index. Returns the result and how many units were sent.
    fn isolate(rows: usize, bad: &[usize], first_failed: bool) -> (Done<()>, usize) {
        let mut iso = if first_failed {
            Isolation::after_failure(rows, "whole".into())
        } else {
            Isolation::new(rows)
        };
        let mut sent = 0;
        while let Some(r) = iso.next() {
            sent += 1;
            if r.clone().any(|i| bad.contains(&i)) {
                iso.fail(format!("bad {r:?}"));
            } else {
                let vectors = r.clone().map(|i| i as f32).collect();
                iso.succeed(vectors, r.len() as u64, 2 * r.len() as u64, 0);
            }
        }
        let job = Job {
            id: 3,
            texts: vec![String::new(); rows],
            payload: (),
        };
        (iso.finish(job), sent)
    }

    #[test]
    fn a_good_job_sent_alone_comes_back_whole() {
        let (done, sent) = isolate(5, &[], false);
        assert_eq!(sent, 1);
        assert_eq!(done.vectors, vec![0.0, 1.0, 2.0, 3.0, 4.0]);
        assert!(done.failed.is_empty());
        assert_eq!((done.tokens, done.padded_tokens), (5, 10));
    }

    #[test]
    fn one_bad_row_is_found_in_few_sends_and_the_rest_is_kept_in_order() {
        for bad in [0, 7, 127, 128, 255] {
            let (done, sent) = isolate(256, &[bad], false);
            assert_eq!(done.failed, vec![(bad, format!("bad {bad}..{}", bad + 1))]);
            let want: Vec<f32> = (0..256).filter(|&i| i != bad).map(|i| i as f32).collect();
            assert_eq!(done.vectors, want);
            // One failing range per level (9 levels), one good sibling per level below the top.
            assert_eq!(sent, 1 + 2 * 8, "bad row {bad}");
            assert_eq!(done.tokens, 255);
        }
    }

    #[test]
    fn several_bad_rows_are_all_found() {
        let (done, _) = isolate(20, &[3, 4, 19], true);
        let rows: Vec<usize> = done.failed.iter().map(|(r, _)| *r).collect();
        assert_eq!(rows, vec![3, 4, 19]);
        assert_eq!(done.vectors.len(), 17);
        assert!(done.vectors.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn a_single_row_that_failed_needs_no_resend() {
        let iso = Isolation::after_failure(1, "test fault".into());
        assert_eq!(iso.next(), None);
        let done = iso.finish(Job {
            id: 0,
            texts: vec!["x".into()],
            payload: (),
        });
        assert_eq!(done.failed, vec![(0, "test fault".to_string())]);
        assert!(done.vectors.is_empty());
    }

    #[test]
    fn an_empty_job_has_nothing_to_isolate() {
        assert_eq!(Isolation::new(0).next(), None);
        assert_eq!(Isolation::after_failure(0, "x".into()).next(), None);
    }
}
