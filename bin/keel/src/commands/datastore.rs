//! `keel datastore …`

use anyhow::Context;
use clap::Subcommand;
use hostd_api::FileKind;

use super::{connect, print_json};
use crate::table;
use crate::Global;

#[derive(Subcommand)]
pub enum DatastoreCmd {
    /// The datastores, their capacity and free space.
    List,
    /// The files in a folder of a datastore.
    Browse {
        datastore: String,
        #[arg(default_value = "")]
        path: String,
    },
    /// Copies a local file to a datastore path.
    Upload {
        datastore: String,
        local: std::path::PathBuf,
        remote: String,
    },
    /// Copies a datastore file to a local path.
    Download {
        datastore: String,
        remote: String,
        local: std::path::PathBuf,
    },
}

pub fn run(cmd: DatastoreCmd, g: &Global) -> anyhow::Result<()> {
    let c = connect(g)?;
    match cmd {
        DatastoreCmd::List => {
            let list = c.datastore_list()?;
            if g.json {
                return print_json(&list);
            }
            let rows = list
                .iter()
                .map(|d| {
                    vec![
                        d.name.clone(),
                        table::bytes(d.capacity_bytes),
                        table::bytes(d.free_bytes),
                        d.path.clone(),
                    ]
                })
                .collect::<Vec<_>>();
            table::print(&["NAME", "CAPACITY", "FREE", "PATH"], &rows);
        }
        DatastoreCmd::Browse { datastore, path } => {
            let list = c.datastore_browse(&datastore, &path)?;
            if g.json {
                return print_json(&list);
            }
            let rows = list
                .iter()
                .map(|f| {
                    vec![
                        match f.kind {
                            FileKind::Dir => format!("{}/", f.name),
                            FileKind::File => f.name.clone(),
                        },
                        table::bytes(f.size_bytes),
                        table::time(f.modified_ms),
                    ]
                })
                .collect::<Vec<_>>();
            table::print(&["NAME", "SIZE", "MODIFIED (UTC)"], &rows);
        }
        DatastoreCmd::Upload {
            datastore,
            local,
            remote,
        } => {
            let file = std::fs::File::open(&local)
                .with_context(|| format!("Cannot open {}", local.display()))?;
            let size = file.metadata()?.len();
            c.upload(&datastore, &remote, file, size)?;
            if !g.json {
                println!(
                    "Uploaded {} ({}) to [{datastore}] {remote}",
                    local.display(),
                    table::bytes(size)
                );
            }
        }
        DatastoreCmd::Download {
            datastore,
            remote,
            local,
        } => {
            // Into a temporary file first: a broken download leaves nothing.
            let tmp = local.with_extension("keel-part");
            let mut file = std::fs::File::create(&tmp)
                .with_context(|| format!("Cannot create {}", tmp.display()))?;
            let result = c.download(&datastore, &remote, &mut file);
            let n = match result {
                Ok(n) => n,
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e.into());
                }
            };
            file.sync_all()?;
            std::fs::rename(&tmp, &local)
                .with_context(|| format!("Cannot write {}", local.display()))?;
            if !g.json {
                println!(
                    "Downloaded [{datastore}] {remote} ({}) to {}",
                    table::bytes(n),
                    local.display()
                );
            }
        }
    }
    Ok(())
}
