//! Splitting one input among the tasks of an indexed job (a Slurm job array, a Kubernetes
//! Indexed Job, or `--num-shards N --shard-index I` by hand).
//!
//! The input is the dataset's data files read in order, one row sequence of `T` rows (`T` from the
//! Parquet footers, capped by `--max-rows`). Task `I` of `N` takes the contiguous row range
//! `[T·I/N, T·(I+1)/N)`: ranges are as even as whole rows allow (sizes differ by at most one),
//! and together they cover `0..T` exactly once. A task reads only the files its range overlaps
//! and, inside the first and last of them, only its rows, so a large file is shared by several
//! tasks and many small files are shared out whole. `row_index` stays the row's position in the
//! whole input.

use std::ops::Range;

/// Which task of an indexed job this run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskSpec {
    /// This task's index, from 0.
    pub index: u32,
    /// The number of tasks.
    pub count: u32,
    /// Where the index came from: `flags`, `slurm` or `kubernetes`.
    pub engine: &'static str,
}

impl TaskSpec {
    /// The folder name of this task's output (`task-00001-of-00003`).
    pub fn folder(&self) -> String {
        folder_name(self.index, self.count)
    }
}

/// The folder name of task `index` of `count` (`task-00001-of-00003`).
pub fn folder_name(index: u32, count: u32) -> String {
    format!("task-{index:05}-of-{count:05}")
}

/// Parses a folder name made by [`folder_name`] back into `(index, count)`.
pub fn parse_folder_name(name: &str) -> Option<(u32, u32)> {
    let rest = name.strip_prefix("task-")?;
    let (i, n) = rest.split_once("-of-")?;
    Some((i.parse().ok()?, n.parse().ok()?))
}

/// Works out the task from the flags and, where they say nothing, from the job engine's
/// environment (`env` looks a variable up): Slurm's `SLURM_ARRAY_TASK_ID` minus
/// `SLURM_ARRAY_TASK_MIN` of `SLURM_ARRAY_TASK_COUNT`, or a Kubernetes Indexed Job's
/// `JOB_COMPLETION_INDEX` (whose count must be given with `--num-shards`). `None` when the run
/// is not split. The error is one line.
pub fn resolve_task(
    num_shards: Option<u32>,
    shard_index: Option<u32>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<TaskSpec>, String> {
    let number = |name: &str| -> Result<Option<u32>, String> {
        match env(name) {
            None => Ok(None),
            Some(v) if v.trim().is_empty() => Ok(None),
            Some(v) => v
                .trim()
                .parse::<u32>()
                .map(Some)
                .map_err(|_| format!("{name}={v} is not a task number")),
        }
    };
    let (index, count, engine) = if let Some(index) = shard_index {
        let count = match num_shards {
            Some(n) => n,
            None => number("SLURM_ARRAY_TASK_COUNT")?
                .ok_or("--shard-index needs --num-shards (the number of tasks)")?,
        };
        (index, count, "flags")
    } else if let Some(id) = number("SLURM_ARRAY_TASK_ID")? {
        let min = number("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
        let index = id.checked_sub(min).ok_or(format!(
            "SLURM_ARRAY_TASK_ID {id} is below SLURM_ARRAY_TASK_MIN {min}"
        ))?;
        let count = match num_shards {
            Some(n) => n,
            None => number("SLURM_ARRAY_TASK_COUNT")?.ok_or(
                "SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not; pass --num-shards",
            )?,
        };
        (index, count, "slurm")
    } else if let Some(index) = number("JOB_COMPLETION_INDEX")? {
        let count = num_shards.ok_or(
            "JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job) but --num-shards is not; pass the Job's completions",
        )?;
        (index, count, "kubernetes")
    } else if let Some(n) = num_shards {
        return Err(format!(
            "--num-shards {n} needs --shard-index (or SLURM_ARRAY_TASK_ID, or JOB_COMPLETION_INDEX)"
        ));
    } else {
        return Ok(None);
    };
    if count == 0 {
        return Err("--num-shards must be at least 1".into());
    }
    if index >= count {
        return Err(format!(
            "task index {index} is not below the number of tasks {count} (from {engine}); a Slurm array must be contiguous, e.g. --array=0-{}",
            count - 1
        ));
    }
    Ok(Some(TaskSpec {
        index,
        count,
        engine,
    }))
}

/// The input rows task `index` of `count` embeds, out of `total`: `[total·index/count,
/// total·(index+1)/count)`.
pub fn row_range(total: u64, index: u32, count: u32) -> Range<u64> {
    let at = |i: u32| (u128::from(total) * u128::from(i) / u128::from(count.max(1))) as u64;
    at(index)..at(index + 1)
}

/// The files a row range overlaps: the indexes of those files (with rows in the range, in
/// order) and the input position of the first row of the first of them (`rows.start` when
/// none).
pub fn files_for(file_rows: &[u64], rows: &Range<u64>) -> (Vec<usize>, u64) {
    let mut files = Vec::new();
    if rows.is_empty() {
        return (files, rows.start);
    }
    let mut first_row = None;
    let mut at = 0u64;
    for (i, &n) in file_rows.iter().enumerate() {
        let span = at..at.saturating_add(n);
        if n > 0 && span.start < rows.end && rows.start < span.end {
            first_row.get_or_insert(span.start);
            files.push(i);
        }
        at = span.end;
    }
    (files, first_row.unwrap_or(rows.start))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn ranges_cover_every_row_once_for_many_counts() {
        for total in [0u64, 1, 2, 7, 100, 63_904, 1 << 40] {
            for count in 1..=67u32 {
                let mut next = 0;
                for index in 0..count {
                    let r = row_range(total, index, count);
                    assert_eq!(
                        r.start, next,
                        "gap or overlap at {index}/{count} of {total}"
                    );
                    assert!(r.end >= r.start);
                    let even = total / u64::from(count);
                    assert!(r.end - r.start == even || r.end - r.start == even + 1);
                    next = r.end;
                }
                assert_eq!(next, total, "{count} tasks over {total} rows");
            }
        }
    }

    #[test]
    fn files_for_a_range_are_exactly_those_holding_its_rows() {
        let layouts: [&[u64]; 6] = [
            &[63_904],
            &[10, 0, 10, 10],
            &[1, 1, 1, 1, 1, 1, 1],
            &[0, 0, 5],
            &[1000, 3, 4000, 0, 17, 250],
            &[],
        ];
        for layout in layouts {
            let total: u64 = layout.iter().sum();
            let starts: Vec<u64> = layout
                .iter()
                .scan(0, |at, n| {
                    let s = *at;
                    *at += n;
                    Some(s)
                })
                .collect();
            for count in 1..=23u32 {
                let mut seen = vec![0u32; total as usize];
                for index in 0..count {
                    let r = row_range(total, index, count);
                    let (files, first) = files_for(layout, &r);
                    // Reading the files in order from `first` and keeping the range's rows.
                    let mut at = first;
                    for (k, &f) in files.iter().enumerate() {
                        assert_eq!(at, starts[f], "files are contiguous");
                        assert!(layout[f] > 0, "an empty file is never read");
                        if k > 0 {
                            let between = &layout[files[k - 1] + 1..f];
                            assert!(between.iter().all(|&n| n == 0), "only empty files skipped");
                        }
                        for row in at..at + layout[f] {
                            if r.contains(&row) {
                                seen[row as usize] += 1;
                            }
                        }
                        at += layout[f];
                    }
                    if !r.is_empty() {
                        assert!(first <= r.start && at >= r.end, "{layout:?} {r:?}");
                    } else {
                        assert!(files.is_empty());
                    }
                }
                assert!(seen.iter().all(|&s| s == 1), "{layout:?} over {count}");
            }
        }
    }

    #[test]
    fn flags_win_over_the_environment() {
        let e = env(&[
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ]);
        let t = resolve_task(Some(4), Some(1), &e).unwrap().unwrap();
        assert_eq!((t.index, t.count, t.engine), (1, 4, "flags"));
        assert_eq!(resolve_task(None, None, env(&[])).unwrap(), None);
    }

    #[test]
    fn slurm_array_indexes_count_from_the_minimum() {
        let e = env(&[
            ("SLURM_ARRAY_TASK_ID", "5"),
            ("SLURM_ARRAY_TASK_MIN", "4"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ]);
        let t = resolve_task(None, None, &e).unwrap().unwrap();
        assert_eq!((t.index, t.count, t.engine), (1, 3, "slurm"));
        let stepped = env(&[
            ("SLURM_ARRAY_TASK_ID", "8"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_COUNT", "5"),
        ]);
        let err = resolve_task(None, None, stepped).unwrap_err();
        assert!(err.contains("must be contiguous"), "{err}");
        let bad = env(&[("SLURM_ARRAY_TASK_ID", "x")]);
        assert_eq!(
            resolve_task(None, None, bad).unwrap_err(),
            "SLURM_ARRAY_TASK_ID=x is not a task number"
        );
    }

    #[test]
    fn kubernetes_index_needs_the_count() {
        let e = env(&[("JOB_COMPLETION_INDEX", "2")]);
        let err = resolve_task(None, None, &e).unwrap_err();
        assert!(err.contains("--num-shards"), "{err}");
        let t = resolve_task(Some(3), None, &e).unwrap().unwrap();
        assert_eq!((t.index, t.count, t.engine), (2, 3, "kubernetes"));
        assert!(resolve_task(Some(2), None, &e).is_err());
    }

    #[test]
    fn half_a_task_spec_is_refused() {
        assert!(resolve_task(Some(3), None, env(&[])).is_err());
        assert!(resolve_task(None, Some(0), env(&[])).is_err());
        assert!(resolve_task(Some(3), Some(3), env(&[])).is_err());
    }

    #[test]
    fn folder_names_round_trip() {
        assert_eq!(folder_name(1, 3), "task-00001-of-00003");
        assert_eq!(parse_folder_name("task-00001-of-00003"), Some((1, 3)));
        assert_eq!(parse_folder_name("shard-00001"), None);
    }
}
