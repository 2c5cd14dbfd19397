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
        let crit = &r.gate.criteria;
        let failures = crit.iter().filter(|c| c.status == Status::Fail).count();
        let skipped = crit.iter().filter(|c| c.status == Status::Skipped).count();
        let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            x,
            "<testsuites name=\"qgate\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\">",
            crit.len()
        );
        let _ = writeln!(
            x,
            "  <testsuite name=\"qgate.{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\">",
            esc(&r.command),
            crit.len()
        );
        let (b, c) = r
            .sides()
            .map(|(b, c)| (b.spec.as_str(), c.spec.as_str()))
            .unwrap_or(("", ""));
        let _ = writeln!(
            x,
            "    <properties><property name=\"baseline\" value=\"{}\"/><property name=\"candidate\" value=\"{}\"/><property name=\"data\" value=\"{}\"/></properties>",
            esc(b),
            esc(c),
            esc(r.data.as_ref().map(|d| d.source.as_str()).unwrap_or("synthetic or benchmark inputs"))
        );
        for c in crit {
            let _ = write!(
                x,
                "    <testcase classname=\"qgate.{}.gate\" name=\"{}\">",
                esc(&r.command),
                esc(&c.key)
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
        x.push_str("  </testsuite>\n</testsuites>\n");
        Ok(x)
    }
}
