//! Addresses to inlined calls, files and lines from an object's DWARF,
//! read in place and kept nowhere: the only state that outlives a batch is
//! the [`UnitIndex`] (which compile unit covers which addresses, 16 bytes a
//! range). Each batch parses the line program and walks the entries of
//! just the units its addresses fall in, then lets go of everything; what
//! it found is cached by the caller per address.

use std::collections::HashMap;

use gimli::{EndianSlice, RunTimeEndian, constants as dw};

/// The reader over an object's mapped bytes.
pub type R<'a> = EndianSlice<'a, RunTimeEndian>;

/// One frame as DWARF describes it, before names are cleaned up.
#[derive(Clone, Debug, Default)]
pub struct RawFrame {
    /// The function's name: demangled linkage name if DWARF has one, else
    /// its bare name; `None` if DWARF names none.
    pub name: Option<String>,
    /// Whether `name` is a full path (from a linkage name).
    pub qualified: bool,
    /// Source file, empty if unknown.
    pub file: String,
    /// Line, 0 if unknown.
    pub line: u32,
}

/// Which compile unit covers which addresses (ELF virtual addresses).
pub struct UnitIndex {
    /// (start, length, offset of the unit in `.debug_info`), by start.
    ranges: Vec<(u64, u32, u32)>,
    /// Every unit's offset, sorted: to find the unit of a cross-unit
    /// reference.
    units: Vec<u32>,
}

impl UnitIndex {
    /// Reads `.debug_aranges`, and the root entry of each unit it leaves
    /// out. Units that do not parse are left out. `every_units` runs every
    /// 64 units (to hand back the pages read).
    pub fn build(
        dwarf: &gimli::Dwarf<R<'_>>,
        mut every_units: impl FnMut(),
    ) -> gimli::Result<UnitIndex> {
        let mut ranges = Vec::new();
        let mut covered = std::collections::HashSet::new();
        let mut headers = dwarf.debug_aranges.headers();
        while let Some(h) = headers.next()? {
            let Ok(cu) = u32::try_from(h.debug_info_offset().0) else {
                continue;
            };
            let mut entries = h.entries();
            while let Some(e) = entries.next()? {
                push_range(&mut ranges, e.range(), cu);
                covered.insert(cu);
            }
        }
        let mut units = Vec::new();
        let mut iter = dwarf.units();
        while let Some(header) = iter.next()? {
            let Ok(off) = u32::try_from(header.offset().0) else {
                continue;
            };
            units.push(off);
            if units.len() % 64 == 0 {
                every_units();
            }
            if covered.contains(&off) {
                continue;
            }
            let Ok(unit) = dwarf.unit(header) else {
                continue;
            };
            if let Ok(mut rs) = dwarf.unit_ranges(&unit) {
                while let Ok(Some(r)) = rs.next() {
                    push_range(&mut ranges, r, off);
                }
            }
        }
        ranges.sort_unstable();
        ranges.shrink_to_fit();
        units.sort_unstable();
        units.shrink_to_fit();
        Ok(UnitIndex { ranges, units })
    }

    /// The index of an object without DWARF.
    pub fn empty() -> UnitIndex {
        UnitIndex {
            ranges: Vec::new(),
            units: Vec::new(),
        }
    }

    /// Bytes this index holds.
    pub fn bytes(&self) -> usize {
        self.ranges.capacity() * 16 + self.units.capacity() * 4
    }

    /// The unit covering `addr`, if any.
    pub fn unit_of(&self, addr: u64) -> Option<u32> {
        let at = self.ranges.partition_point(|r| r.0 <= addr);
        // Ranges may overlap (a unit's range list and aranges disagreeing):
        // look a few back.
        self.ranges[..at]
            .iter()
            .rev()
            .take(4)
            .find(|r| addr - r.0 < u64::from(r.1))
            .map(|r| r.2)
    }

    /// The unit that holds the `.debug_info` offset `off`.
    fn unit_holding(&self, off: usize) -> Option<u32> {
        let at = self.units.partition_point(|&u| u as usize <= off);
        at.checked_sub(1).map(|i| self.units[i])
    }
}

fn push_range(out: &mut Vec<(u64, u32, u32)>, r: gimli::Range, unit: u32) {
    // Functions the linker dropped keep ranges at address 0 (or a
    // tombstone); they would shadow real code.
    if r.begin == 0 || r.end <= r.begin || r.begin == u64::MAX {
        return;
    }
    if let Ok(len) = u32::try_from(r.end - r.begin) {
        out.push((r.begin, len, unit));
    }
}

/// One subprogram or inlined call on the way to an address.
#[derive(Clone, Copy)]
struct Level {
    depth: isize,
    /// The entry, to name it.
    entry: gimli::UnitOffset,
    /// Where the caller called it (inlined calls only).
    call_file: u64,
    call_line: u32,
}

/// What one batch reads from one object.
pub struct Batch<'a, 'd> {
    dwarf: &'d gimli::Dwarf<R<'a>>,
    index: &'d UnitIndex,
    names: HashMap<(u32, usize), Option<(String, bool)>>,
}

impl<'a, 'd> Batch<'a, 'd> {
    /// A batch over `dwarf`, whose units `index` covers.
    pub fn new(dwarf: &'d gimli::Dwarf<R<'a>>, index: &'d UnitIndex) -> Self {
        Batch {
            dwarf,
            index,
            names: HashMap::new(),
        }
    }

    /// The frames of each address of `addrs` (sorted ELF virtual
    /// addresses), innermost first, into `out` (one slot per address; left
    /// empty where DWARF knows nothing). `after_unit` runs after each unit
    /// (to hand back the pages it read, so a batch's peak is one unit's).
    pub fn resolve(
        &mut self,
        addrs: &[u64],
        out: &mut [Vec<RawFrame>],
        mut after_unit: impl FnMut(),
    ) {
        let mut i = 0;
        while i < addrs.len() {
            let Some(unit) = self.index.unit_of(addrs[i]) else {
                i += 1;
                continue;
            };
            let mut j = i + 1;
            while j < addrs.len() && self.index.unit_of(addrs[j]) == Some(unit) {
                j += 1;
            }
            // One bad unit costs only its own addresses.
            let _ = self.resolve_unit(unit, &addrs[i..j], &mut out[i..j]);
            after_unit();
            i = j;
        }
    }

    fn resolve_unit(
        &mut self,
        unit_off: u32,
        addrs: &[u64],
        out: &mut [Vec<RawFrame>],
    ) -> gimli::Result<()> {
        let dwarf = self.dwarf;
        let header = dwarf
            .debug_info
            .header_from_offset(gimli::DebugInfoOffset(unit_off as usize))?;
        let unit = dwarf.unit(header)?;
        let mut files = Files::default();

        // The line of each address: the row at or below it in its sequence.
        let mut loc: Vec<Option<(u64, u32)>> = vec![None; addrs.len()];
        if let Some(program) = unit.line_program.clone() {
            let mut rows = program.rows();
            let mut prev: Option<(u64, u64, u32)> = None;
            let mut seq_at_zero = false;
            let mut seq_start = true;
            while let Some((_, row)) = rows.next_row()? {
                let a = row.address();
                if seq_start {
                    seq_at_zero = a == 0;
                    seq_start = false;
                }
                if let Some((pa, file, line)) = prev
                    && a > pa
                    && !seq_at_zero
                {
                    let lo = addrs.partition_point(|&x| x < pa);
                    let hi = addrs.partition_point(|&x| x < a);
                    for l in &mut loc[lo..hi] {
                        *l = Some((file, line));
                    }
                }
                if row.end_sequence() {
                    prev = None;
                    seq_start = true;
                } else {
                    let line = row
                        .line()
                        .map_or(0, |l| u32::try_from(l.get()).unwrap_or(0));
                    prev = Some((a, row.file_index(), line));
                }
            }
            files.header = Some(rows.header().clone());
        }

        // The subprogram and inlined calls around each address.
        let mut chains: Vec<Vec<Level>> = vec![Vec::new(); addrs.len()];
        let mut cursor = unit.entries();
        while let Some(e) = cursor.next_dfs()? {
            let tag = e.tag();
            if tag != dw::DW_TAG_subprogram && tag != dw::DW_TAG_inlined_subroutine {
                continue;
            }
            let level = Level {
                depth: e.depth(),
                entry: e.offset(),
                call_file: match e.attr_value(dw::DW_AT_call_file) {
                    Some(gimli::AttributeValue::FileIndex(f)) => f,
                    Some(v) => v.udata_value().unwrap_or(0),
                    None => 0,
                },
                call_line: e
                    .attr_value(dw::DW_AT_call_line)
                    .and_then(|v| v.udata_value())
                    .and_then(|v| u32::try_from(v).ok())
                    .unwrap_or(0),
            };
            let Ok(mut ranges) = dwarf.die_ranges(&unit, e) else {
                continue;
            };
            while let Ok(Some(r)) = ranges.next() {
                if r.begin == 0 || r.end <= r.begin {
                    continue;
                }
                let lo = addrs.partition_point(|&x| x < r.begin);
                let hi = addrs.partition_point(|&x| x < r.end);
                for chain in &mut chains[lo..hi] {
                    // A sibling at the same depth replaces the last one.
                    while chain.last().is_some_and(|l| l.depth >= level.depth) {
                        chain.pop();
                    }
                    chain.push(level);
                }
            }
        }

        for (k, chain) in chains.iter().enumerate() {
            let (file, line) = loc[k].unwrap_or((0, 0));
            let mut at_file = files.path(dwarf, &unit, file, loc[k].is_some());
            let mut at_line = line;
            let mut frames = Vec::with_capacity(chain.len().max(1));
            for level in chain.iter().rev() {
                let name = self.name_of(&unit, unit_off, level.entry, 0);
                let (name, qualified) = match name {
                    Some((n, q)) => (Some(n), q),
                    None => (None, false),
                };
                frames.push(RawFrame {
                    name,
                    qualified,
                    file: at_file,
                    line: at_line,
                });
                at_file = files.path(dwarf, &unit, level.call_file, true);
                at_line = level.call_line;
            }
            if frames.is_empty() && loc[k].is_some() {
                frames.push(RawFrame {
                    name: None,
                    qualified: false,
                    file: at_file,
                    line: at_line,
                });
            }
            out[k] = frames;
        }
        Ok(())
    }

    /// The name of the entry at `entry` of `unit`: its linkage name
    /// demangled (a full path), else its bare name, else that of the entry
    /// it is a concrete instance or a definition of. Cached per batch.
    fn name_of(
        &mut self,
        unit: &gimli::Unit<R<'a>>,
        unit_off: u32,
        entry: gimli::UnitOffset,
        depth: u8,
    ) -> Option<(String, bool)> {
        let key = (unit_off, entry.0);
        if let Some(n) = self.names.get(&key) {
            return n.clone();
        }
        let name = self.read_name(unit, unit_off, entry, depth);
        self.names.insert(key, name.clone());
        name
    }

    fn read_name(
        &mut self,
        unit: &gimli::Unit<R<'a>>,
        unit_off: u32,
        entry: gimli::UnitOffset,
        depth: u8,
    ) -> Option<(String, bool)> {
        let dwarf = self.dwarf;
        let e = unit.entry(entry).ok()?;
        for at in [dw::DW_AT_linkage_name, dw::DW_AT_MIPS_linkage_name] {
            if let Some(v) = e.attr_value(at)
                && let Ok(s) = dwarf.attr_string(unit, v)
            {
                let raw = s.to_string_lossy();
                return Some((super::demangle(&raw), true));
            }
        }
        if let Some(v) = e.attr_value(dw::DW_AT_name)
            && let Ok(s) = dwarf.attr_string(unit, v)
        {
            return Some((s.to_string_lossy().into_owned(), false));
        }
        if depth >= 4 {
            return None;
        }
        for at in [dw::DW_AT_abstract_origin, dw::DW_AT_specification] {
            match e.attr_value(at) {
                Some(gimli::AttributeValue::UnitRef(off)) => {
                    return self.name_of(unit, unit_off, off, depth + 1);
                }
                Some(gimli::AttributeValue::DebugInfoRef(off)) => {
                    let uo = self.index.unit_holding(off.0)?;
                    let header = dwarf
                        .debug_info
                        .header_from_offset(gimli::DebugInfoOffset(uo as usize))
                        .ok()?;
                    let within = off.to_unit_offset(&header)?;
                    let other = dwarf.unit(header).ok()?;
                    return self.name_of(&other, uo, within, depth + 1);
                }
                _ => {}
            }
        }
        None
    }
}

/// File paths of one unit's line program, built on demand.
#[derive(Default)]
struct Files<'a> {
    header: Option<gimli::LineProgramHeader<R<'a>>>,
    paths: HashMap<u64, String>,
}

impl<'a> Files<'a> {
    fn path(
        &mut self,
        dwarf: &gimli::Dwarf<R<'a>>,
        unit: &gimli::Unit<R<'a>>,
        index: u64,
        known: bool,
    ) -> String {
        if !known {
            return String::new();
        }
        if let Some(p) = self.paths.get(&index) {
            return p.clone();
        }
        let p = self.build(dwarf, unit, index).unwrap_or_default();
        self.paths.insert(index, p.clone());
        p
    }

    fn build(
        &self,
        dwarf: &gimli::Dwarf<R<'a>>,
        unit: &gimli::Unit<R<'a>>,
        index: u64,
    ) -> Option<String> {
        let header = self.header.as_ref()?;
        let file = header.file(index)?;
        let name = dwarf.attr_string(unit, file.path_name()).ok()?;
        let name = name.to_string_lossy();
        if name.starts_with('/') {
            return Some(name.into_owned());
        }
        let mut path = String::new();
        let dir = file
            .directory(header)
            .and_then(|d| dwarf.attr_string(unit, d).ok())
            .map(|d| d.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !dir.starts_with('/')
            && let Some(comp) = &unit.comp_dir
        {
            path.push_str(&comp.to_string_lossy());
            path.push('/');
        }
        if !dir.is_empty() {
            path.push_str(&dir);
            path.push('/');
        }
        path.push_str(&name);
        Some(path)
    }
}
