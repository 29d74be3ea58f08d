//! The catalog a job sees: the datasets a query names (or, for a task graph, all), read from
//! the leader, so a query costs what it names, not the size of the catalog.

use tern_proto::{Caller, Clock, ErrorKind, NodeId, Request, Response, Transport};

use crate::NodeService;

impl<T: Transport, C: Clock> NodeService<T, C> {
    /// The datasets a query sees (those `named`, or all), as the leader has them (a
    /// follower asks the leader, so a dataset just committed is never missing), and the
    /// nodes as this node knows them.
    pub(crate) async fn query_catalog(
        &self,
        named: Option<&[String]>,
    ) -> Result<
        (
            Vec<tern_proto::DatasetRecord>,
            std::collections::BTreeMap<NodeId, tern_proto::NodeRecord>,
        ),
        Response,
    > {
        let read = self
            .meta
            .read(|s| {
                let datasets = match named {
                    Some(names) => names
                        .iter()
                        .filter_map(|name| s.catalog_get(tern_proto::DATASETS_TABLE, name))
                        .filter_map(|raw| tern_proto::DatasetRecord::decode(raw).ok())
                        .collect(),
                    None => crate::repair::datasets(s)
                        .into_iter()
                        .map(|(_, d)| d)
                        .collect(),
                };
                (datasets, s.nodes.clone())
            })
            .await;
        match read {
            Ok(found) => return Ok(found),
            Err(tern_meta::MetaError::NotLeader { .. }) => {}
            Err(e) => return Err(Response::error(ErrorKind::NoLeader, e.to_string())),
        }
        if let Some(names) = named {
            let mut datasets = Vec::with_capacity(names.len());
            for name in names {
                let got = self
                    .handle(
                        Request::CatalogGet {
                            table: tern_proto::DATASETS_TABLE.into(),
                            key: name.clone(),
                        },
                        &Caller::Node(self.id()),
                    )
                    .await;
                match got {
                    Response::CatalogValue(Some(raw)) => {
                        if let Ok(record) = tern_proto::DatasetRecord::decode(&raw) {
                            datasets.push(record);
                        }
                    }
                    Response::CatalogValue(None) => {}
                    Response::Error(e) => return Err(Response::Error(e)),
                    other => {
                        return Err(Response::error(
                            ErrorKind::Unavailable,
                            format!("unexpected catalog answer {other:?}"),
                        ));
                    }
                }
            }
            return Ok((datasets, self.meta.read_local(|s| s.nodes.clone())));
        }
        let listed = self
            .handle(
                Request::CatalogList {
                    table: tern_proto::DATASETS_TABLE.into(),
                    prefix: String::new(),
                    limit: u32::MAX,
                },
                &Caller::Node(self.id()),
            )
            .await;
        let entries = match listed {
            Response::CatalogEntries(entries) => entries,
            Response::Error(e) => return Err(Response::Error(e)),
            other => {
                return Err(Response::error(
                    ErrorKind::Unavailable,
                    format!("unexpected catalog answer {other:?}"),
                ));
            }
        };
        let datasets = entries
            .iter()
            .filter_map(|(_, raw)| postcard::from_bytes(raw).ok())
            .collect();
        Ok((datasets, self.meta.read_local(|s| s.nodes.clone())))
    }
}

/// The tables a query's SQL names (not its CTEs), for resolving only those datasets: a query
/// costs what it reads, not the size of the catalog. SQL that does not parse names none, and
/// planning it reports the error.
pub(crate) fn tables_named(sql: &str) -> Vec<String> {
    use tern_exec::datafusion::sql::{parser::DFParser, resolve::resolve_table_references};
    let Ok(statements) = DFParser::parse_sql(sql) else {
        return Vec::new();
    };
    let mut names = std::collections::BTreeSet::new();
    for statement in &statements {
        if let Ok((tables, _)) = resolve_table_references(statement, true) {
            for table in tables {
                // A dataset is registered under its whole name (which may hold dots).
                names.insert(table.table().to_string());
                names.insert(table.to_string());
            }
        }
    }
    names.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::tables_named;

    #[test]
    fn a_query_names_its_tables_and_not_its_ctes() {
        assert_eq!(
            tables_named("SELECT * FROM sales s JOIN \"my-data.v2\" d ON s.id = d.id"),
            vec!["my-data.v2".to_string(), "sales".to_string()]
        );
        let with = "WITH big AS (SELECT * FROM sales WHERE amount > 10) \
                    SELECT count(*) FROM big WHERE id IN (SELECT id FROM Returns)";
        assert_eq!(
            tables_named(with),
            vec!["returns".to_string(), "sales".to_string()]
        );
        assert!(
            tables_named("SELEC nothing FROM").is_empty(),
            "planning reports the error"
        );
    }
}
