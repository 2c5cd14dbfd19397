//! JUnit XML: one test case per gate criterion, so CI test tabs show which one failed.

use std::fmt::Write;

use crate::Status;

use crate::svg::esc;
use crate::{num, Exporter, Report, ReportError};

pub(crate) struct Junit;

impl Exporter for Junit {
    fn file_name(&self) -> &'static str {
        "junit.xml"
    }

    fn render(&self, r: &Report) -> Result<String, ReportError> {
        // One suite for the run; with several candidates, one more per candidate.
        let mut suites: Vec<(String, &Report)> = vec![(format!("qgate.{}", r.command), r)];
        for c in &r.candidates {
            suites.push((
                format!("qgate.{}.candidate-{}", r.command, c.position),
                &c.report,
            ));
        }
        let count = |s: Status| {
            suites
                .iter()
                .flat_map(|(_, r)| &r.gate.criteria)
                .filter(|c| c.status == s)
                .count()
        };
        let tests: usize = suites.iter().map(|(_, r)| r.gate.criteria.len()).sum();
        let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            x,
            "<testsuites name=\"qgate\" tests=\"{tests}\" failures=\"{}\" errors=\"0\" skipped=\"{}\">",
            count(Status::Fail),
            count(Status::Skipped)
        );
        for (name, report) in &suites {
            suite(&mut x, name, report, r);
        }
        x.push_str("</testsuites>\n");
        Ok(x)
    }
}

/// One `<testsuite>`: a test case per criterion of `r`; `run` names the data.
fn suite(x: &mut String, name: &str, r: &Report, run: &Report) {
    let crit = &r.gate.criteria;
    let failures = crit.iter().filter(|c| c.status == Status::Fail).count();
    let skipped = crit.iter().filter(|c| c.status == Status::Skipped).count();
    let _ = writeln!(
        x,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\">",
        esc(name),
        crit.len()
    );
    let (b, c) = r
        .sides()
        .map(|(b, c)| (b.spec.as_str(), c.spec.as_str()))
        .unwrap_or_else(|| {
            (
                run.baseline
                    .as_ref()
                    .map_or("", |b| b.runtime.spec.as_str()),
                "",
            )
        });
    let _ = writeln!(
        x,
        "    <properties><property name=\"baseline\" value=\"{}\"/><property name=\"candidate\" value=\"{}\"/><property name=\"data\" value=\"{}\"/></properties>",
        esc(b),
        esc(c),
        esc(run.data.as_ref().map(|d| d.source.as_str()).unwrap_or("synthetic or benchmark inputs"))
    );
    for c in crit {
        let case = c.label();
        let _ = write!(
            x,
            "    <testcase classname=\"{}.gate\" name=\"{}\">",
            esc(name),
            esc(&case)
        );
        match c.status {
            Status::Pass => {}
            Status::Fail => {
                let _ = write!(
                    x,
                    "<failure message=\"{}\" type=\"threshold\">observed {} against threshold {} (source: {})</failure>",
                    esc(&c.message),
                    c.observed.map(num).unwrap_or_else(|| "n/a".into()),
                    num(c.threshold),
                    esc(&c.source.to_string())
                );
            }
            Status::Skipped => {
                let _ = write!(x, "<skipped message=\"{}\"/>", esc(&c.message));
            }
        }
        x.push_str("</testcase>\n");
    }
    x.push_str("  </testsuite>\n");
}
