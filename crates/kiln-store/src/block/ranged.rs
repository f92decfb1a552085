//! Ranged reads of a block's `samples.parquet` in object storage: the
//! first and last series of each row group (from the footer), and the
//! rows of some row groups (only their pages fetched), all of them or
//! those of some minutes (a row filter on `minute_ms`). Reads only; what
//! the rows become is `read::put_samples`'.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use bytes::Bytes;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

use super::{Meta, err, path};
use crate::Error;

/// Per row group of the block's `samples.parquet`, the first and last
/// series it holds (from the footer's statistics; a group without them
/// is taken to hold every series).
pub(crate) async fn group_ranges(
    store: Arc<dyn ObjectStore>,
    meta: &Meta,
) -> Result<Vec<(u32, u32)>, Error> {
    let name = format!("{}/samples.parquet", meta.id);
    let reader = samples_reader(store, meta);
    let builder = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(|e| err(&name, e))?;
    let col = builder
        .parquet_schema()
        .columns()
        .iter()
        .position(|c| c.name() == "series")
        .ok_or_else(|| err(&name, "no series column"))?;
    let u32_of =
        |b: Option<&[u8]>| -> Option<u32> { Some(u32::from_le_bytes(b?.try_into().ok()?)) };
    Ok(builder
        .metadata()
        .row_groups()
        .iter()
        .map(|rg| {
            let st = rg.column(col).statistics();
            let lo = st.and_then(|s| u32_of(s.min_bytes_opt()));
            let hi = st.and_then(|s| u32_of(s.max_bytes_opt()));
            (lo.unwrap_or(0), hi.unwrap_or(u32::MAX))
        })
        .collect())
}

/// The rows of row groups `groups` of the block's `samples.parquet`,
/// read from storage by range (only those groups' pages); with `keep`,
/// only the rows whose minute it keeps (the minute column is read first,
/// the others decoded for those rows alone).
pub(crate) async fn read_groups(
    store: Arc<dyn ObjectStore>,
    meta: &Meta,
    groups: Vec<usize>,
    keep: Option<Box<dyn Fn(i64) -> bool + Send>>,
) -> Result<Vec<RecordBatch>, Error> {
    use futures::TryStreamExt;
    use parquet::arrow::ProjectionMask;
    use parquet::arrow::arrow_reader::{ArrowPredicateFn, RowFilter};
    let name = format!("{}/samples.parquet", meta.id);
    let reader = samples_reader(store, meta);
    let mut builder = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(|e| err(&name, e))?
        .with_row_groups(groups)
        .with_batch_size(1 << 16);
    if let Some(keep) = keep {
        let minute = ProjectionMask::columns(builder.parquet_schema(), ["minute_ms"]);
        let by_minute = ArrowPredicateFn::new(minute, move |b: RecordBatch| {
            let m = b
                .column(0)
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(|| arrow_schema::ArrowError::SchemaError("minute_ms".into()))?;
            Ok(m.values().iter().map(|&m| Some(keep(m))).collect())
        });
        builder = builder.with_row_filter(RowFilter::new(vec![Box::new(by_minute)]));
    }
    builder
        .build()
        .map_err(|e| err(&name, e))?
        .try_collect()
        .await
        .map_err(|e| err(&name, e))
}

fn samples_reader(store: Arc<dyn ObjectStore>, meta: &Meta) -> Ranged {
    Ranged {
        store,
        path: path(&meta.tenant, &meta.id, "samples.parquet"),
        size: meta.files.get("samples.parquet").copied(),
    }
}

/// A Parquet file in object storage, read by ranges: the footer, then
/// only the pages of the row groups asked for.
struct Ranged {
    store: Arc<dyn ObjectStore>,
    path: object_store::path::Path,
    size: Option<u64>,
}

fn external(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for Ranged {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<Bytes>> {
        Box::pin(async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(external)
        })
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        Box::pin(async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(external)
        })
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a parquet::arrow::arrow_reader::ArrowReaderOptions>,
    ) -> futures::future::BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        Box::pin(async move {
            let size = match self.size {
                Some(s) => s,
                None => self.store.head(&self.path).await.map_err(external)?.size,
            };
            let meta = ParquetMetaDataReader::new()
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(meta))
        })
    }
}
