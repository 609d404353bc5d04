//! Roles: the names datasets give speakers, sorted into the three kinds extraction modes look
//! for, and the `--filter-role` selection.
//!
//! Matching ignores case and surrounding whitespace: `assistant`, `model` (Gemini) and `gpt`
//! (ShareGPT) are the assistant; `user` and `human` (ShareGPT) the user; `system` the system.
//! Output keeps the dataset's own role string; these names are only for matching.

/// The kind of speaker a role string names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleKind {
    /// `assistant`, `model`, `gpt`.
    Assistant,
    /// `user`, `human`.
    User,
    /// `system`.
    System,
    /// Anything else (`tool`, `function`, ...).
    Other,
}

/// The kind of speaker `role` names.
pub fn kind(role: &str) -> RoleKind {
    let role = role.trim();
    let is = |name: &str| role.eq_ignore_ascii_case(name);
    if is("assistant") || is("model") || is("gpt") {
        RoleKind::Assistant
    } else if is("user") || is("human") {
        RoleKind::User
    } else if is("system") {
        RoleKind::System
    } else {
        RoleKind::Other
    }
}

/// One name given to `--filter-role`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Wanted {
    /// A known kind: matches every role of that kind.
    Kind(RoleKind),
    /// Another name: matches that role as written, ignoring case and surrounding whitespace.
    Name(String),
}

/// The turns `--filter-role` selects: every turn when no role was given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleFilter(Vec<Wanted>);

impl RoleFilter {
    /// A filter for the role names given (all turns when `names` is empty).
    pub fn new(names: &[String]) -> Self {
        RoleFilter(
            names
                .iter()
                .map(|n| match kind(n) {
                    RoleKind::Other => Wanted::Name(n.trim().to_string()),
                    k => Wanted::Kind(k),
                })
                .collect(),
        )
    }

    /// A filter for one kind of speaker.
    pub fn only(kind: RoleKind) -> Self {
        RoleFilter(vec![Wanted::Kind(kind)])
    }

    /// Whether a turn with role `role` (of kind `k`, as [`kind`] gives) is selected.
    pub fn matches(&self, role: &str, k: RoleKind) -> bool {
        self.0.is_empty()
            || self.0.iter().any(|w| match w {
                Wanted::Kind(want) => *want == k,
                Wanted::Name(name) => role.trim().eq_ignore_ascii_case(name),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_role_names_are_sorted_into_kinds() {
        for (role, want) in [
            ("assistant", RoleKind::Assistant),
            ("Model", RoleKind::Assistant),
            ("gpt", RoleKind::Assistant),
            (" ASSISTANT ", RoleKind::Assistant),
            ("user", RoleKind::User),
            ("human", RoleKind::User),
            ("System", RoleKind::System),
            ("tool", RoleKind::Other),
            ("", RoleKind::Other),
        ] {
            assert_eq!(kind(role), want, "{role:?}");
        }
    }

    #[test]
    fn filter_matches_kinds_and_other_names() {
        let f = RoleFilter::new(&["Assistant".into(), "tool".into()]);
        let m = |role: &str| f.matches(role, kind(role));
        assert!(m("gpt") && m("model") && m("TOOL"));
        assert!(!m("user") && !m("human") && !m("system") && !m("function"));
        let all = RoleFilter::new(&[]);
        assert!(all.matches("anything", RoleKind::Other));
        let human = RoleFilter::new(&["human".into()]);
        assert!(human.matches("user", RoleKind::User));
    }
}
