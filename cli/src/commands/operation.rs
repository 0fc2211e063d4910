//! `zixiao operation ...`

use std::process::ExitCode;

use zixiao_core::api::OperationFilter;
use zixiao_core::model::{Operation, OperationPhase};
use zixiao_core::{Client, Error, OperationId, OperationKind, Result};

use crate::args::{Format, OperationCommand};
use crate::output::{age, bytes, details, print, write_stdout, Table};

pub(crate) async fn run(
    client: Client,
    format: Format,
    command: OperationCommand,
) -> Result<ExitCode> {
    match command {
        OperationCommand::List { all, target, kind } => {
            let filter = OperationFilter {
                target,
                kind: kind
                    .map(|k| k.parse::<OperationKind>())
                    .transpose()
                    .map_err(|e| e.on_field("--kind"))?,
                unfinished: !all,
            };
            let operations = client.list_all_operations(filter).await?;
            print(format, &operations, |o| operation_table(o))?;
            Ok(ExitCode::SUCCESS)
        }
        OperationCommand::Get { id } => {
            let operation = client.get_operation(&operation_id(&id)?).await?;
            print(format, &operation, operation_details)?;
            Ok(ExitCode::SUCCESS)
        }
        OperationCommand::Watch { id } => {
            let id = operation_id(&id)?;
            let mut last = None;
            let ended = client
                .follow_operation(&id, |update| {
                    let line = match format {
                        Format::Table => change_line(update),
                        // One object per line, so a script reads them as they come.
                        _ => serde_json::to_string(update)
                            .map_err(|e| Error::Internal(e.to_string()))?,
                    };
                    // A reconnect shows the state last printed again.
                    if last.as_ref() != Some(&line) {
                        write_stdout(format!("{line}\n").as_bytes())?;
                        last = Some(line);
                    }
                    Ok(())
                })
                .await?;
            Ok(ended_with(&ended))
        }
        OperationCommand::Cancel { id } => {
            let cancelled = client.cancel_operation(&operation_id(&id)?).await?;
            print(format, &cancelled, operation_details)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `id` as an operation id; errors name the argument.
fn operation_id(id: &str) -> Result<OperationId> {
    OperationId::try_from(id).map_err(|e| e.on_field("ID"))
}

/// The exit code of a watched operation that ended, its error on stderr.
fn ended_with(operation: &Operation) -> ExitCode {
    if operation.phase == OperationPhase::Succeeded {
        return ExitCode::SUCCESS;
    }
    let why = operation
        .error
        .as_ref()
        .map_or("no reason recorded", |e| e.message.as_str());
    eprintln!(
        "error: operation {} {}: {why}",
        operation.id, operation.phase
    );
    ExitCode::FAILURE
}

/// One line of `operation watch`: the phase, then the step and progress
/// while it runs, what it made or why it failed once it ended.
fn change_line(o: &Operation) -> String {
    let mut line = o.phase.as_str().to_owned();
    if let Some(step) = &o.step {
        line.push_str(&format!("  {step}"));
    }
    if let Some(progress) = progress_text(o) {
        line.push_str(&format!("  {progress}"));
    }
    if let Some(result) = &o.result {
        line.push_str(&format!("  {result}"));
    }
    if let Some(error) = &o.error {
        line.push_str(&format!("  {}", error.message));
    }
    line
}

fn progress_text(o: &Operation) -> Option<String> {
    let p = o.progress.as_ref()?;
    let amount = |n: u64| {
        if p.unit == "bytes" {
            bytes(n)
        } else {
            format!("{n} {}", p.unit)
        }
    };
    Some(match p.total {
        Some(total) => format!("{} of {}", amount(p.done), amount(total)),
        None => amount(p.done),
    })
}

fn operation_table(operations: &[Operation]) -> String {
    let mut table = Table::new(vec!["ID", "KIND", "TARGET", "PHASE", "AGE", "INFO"]);
    for o in operations {
        let info = match (&o.error, &o.step) {
            (Some(error), _) => error.message.clone(),
            (None, Some(step)) => step.clone(),
            (None, None) => o.result.clone().unwrap_or_default(),
        };
        table.row(vec![
            o.id.to_string(),
            o.kind.as_str().to_owned(),
            o.target.to_string(),
            o.phase.as_str().to_owned(),
            age(o.started_at),
            info,
        ]);
    }
    table.render()
}

fn operation_details(o: &Operation) -> String {
    let mut pairs = vec![
        ("id", o.id.to_string()),
        ("kind", o.kind.as_str().to_owned()),
        ("target", o.target.to_string()),
        ("phase", o.phase.as_str().to_owned()),
    ];
    if let Some(step) = &o.step {
        pairs.push(("step", step.clone()));
    }
    if let Some(progress) = progress_text(o) {
        pairs.push(("progress", progress));
    }
    if !o.steps.is_empty() {
        pairs.push(("steps", o.steps.join(", ")));
    }
    if let Some(who) = &o.requested_by {
        pairs.push(("requested by", who.clone()));
    }
    pairs.push(("started", o.started_at.to_rfc3339()));
    if let Some(at) = o.finished_at {
        pairs.push(("finished", at.to_rfc3339()));
    }
    if let Some(result) = &o.result {
        pairs.push(("result", result.clone()));
    }
    if let Some(error) = &o.error {
        pairs.push(("error", format!("{} ({})", error.message, error.kind)));
    }
    details(&pairs)
}
