//! The scenario library shipped in `scenarios/` at the top of the repository,
//! compiled into the binary so `maildr drill run site-outage` works from any
//! directory. A name that is not in the library is read as a file path.

use std::path::Path;

use crate::plan::PlanSource;

/// Every shipped scenario: (name, plan text).
pub const LIBRARY: [(&str, &str); 8] = [
    ("node-failure", include_str!("../../../scenarios/node-failure.toml")),
    ("site-outage", include_str!("../../../scenarios/site-outage.toml")),
    ("partition", include_str!("../../../scenarios/partition.toml")),
    ("wan-degradation", include_str!("../../../scenarios/wan-degradation.toml")),
    ("dns-failure", include_str!("../../../scenarios/dns-failure.toml")),
    ("planned-switchover", include_str!("../../../scenarios/planned-switchover.toml")),
    ("combined", include_str!("../../../scenarios/combined.toml")),
    ("tamper", include_str!("../../../scenarios/tamper.toml")),
];

/// A library scenario by name, or the plan file at that path.
pub fn load(name_or_path: &str) -> Result<PlanSource, String> {
    if let Some((name, text)) = LIBRARY.iter().find(|(n, _)| *n == name_or_path) {
        return Ok(PlanSource { origin: format!("scenarios/{name}.toml"), text: text.to_string() });
    }
    let path = Path::new(name_or_path);
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(PlanSource { origin: path.display().to_string(), text }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "{name_or_path:?} is neither a scenario ({}) nor a readable file",
            LIBRARY.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
        )),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Plan, StepKind, Verification, WaitCondition};

    #[test]
    fn every_shipped_scenario_parses_names_itself_and_requires_no_lost_mail() {
        for (name, _) in LIBRARY {
            let source = load(name).unwrap();
            let plan = Plan::parse(&source).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(plan.name, name, "the file name and the plan name agree");
            assert_eq!(plan.objectives.rpo_messages, 0, "{name}: nothing acknowledged may be lost");
            assert!(!plan.rollback.is_empty(), "{name}: a rollback undoes the faults");
            assert!(!plan.description.is_empty(), "{name}");
            let proves_mail = plan.steps.iter().any(|s| {
                matches!(
                    &s.kind,
                    StepKind::Wait { condition: WaitCondition::MailFlows, .. }
                        | StepKind::Verify(Verification::MailRoundTrip)
                )
            });
            assert!(proves_mail, "{name}: a drill shows mail flowing after the fault");
        }
    }

    #[test]
    fn an_unknown_name_lists_the_library() {
        let err = load("no-such-scenario").unwrap_err();
        assert!(err.contains("site-outage") && err.contains("node-failure"), "{err}");
    }
}
