//! DICOM Part 10 files: the file meta group, then the data set, read only as far
//! as the pixels need. Values are kept only for the attributes below; everything
//! else (patient, study and device attributes included) is skipped unread, so no
//! identifying value is ever held, logged or echoed in an error.

use std::borrow::Cow;
use std::io::Read;

use super::DicomError;

/// Where a transfer syntax keeps its pixels and how its data set is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Syntax {
    ImplicitLittle,
    ExplicitLittle,
    DeflatedExplicitLittle,
    /// Explicit VR little endian data set, pixels in encapsulated fragments.
    Encapsulated(Codec),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Codec {
    Rle,
    /// JPEG baseline (process 1) and extended (processes 2 and 4) with 8-bit samples.
    JpegLossy,
    /// JPEG lossless (process 14, any predictor or the first).
    JpegLossless,
}

impl Syntax {
    fn from_uid(uid: &str) -> Result<Self, DicomError> {
        Ok(match uid {
            "1.2.840.10008.1.2" => Self::ImplicitLittle,
            "1.2.840.10008.1.2.1" => Self::ExplicitLittle,
            "1.2.840.10008.1.2.1.99" => Self::DeflatedExplicitLittle,
            "1.2.840.10008.1.2.5" => Self::Encapsulated(Codec::Rle),
            "1.2.840.10008.1.2.4.50" | "1.2.840.10008.1.2.4.51" => {
                Self::Encapsulated(Codec::JpegLossy)
            }
            "1.2.840.10008.1.2.4.57" | "1.2.840.10008.1.2.4.70" => {
                Self::Encapsulated(Codec::JpegLossless)
            }
            other => {
                return Err(DicomError::TransferSyntax(quotable(
                    other,
                    64,
                    "0123456789.",
                )))
            }
        })
    }

    fn explicit(self) -> bool {
        self != Self::ImplicitLittle
    }
}

/// The pixel data element as stored.
#[derive(Debug)]
pub(super) enum PixelData<'a> {
    Native(&'a [u8]),
    /// The fragments after the basic offset table.
    Fragments(Vec<&'a [u8]>),
}

/// The attributes the pixels need, as found at the top level of the data set
/// (rescale and window also inside functional group sequences, as enhanced
/// multi-frame objects keep them).
#[derive(Debug, Default)]
pub(super) struct Attributes {
    pub modality: String,
    pub samples_per_pixel: Option<u16>,
    pub photometric: String,
    pub planar_configuration: u16,
    pub frames: Option<String>,
    pub rows: Option<u16>,
    pub columns: Option<u16>,
    pub bits_allocated: Option<u16>,
    pub bits_stored: Option<u16>,
    pub high_bit: Option<u16>,
    pub signed: bool,
    pub window_center: Option<f64>,
    pub window_width: Option<f64>,
    pub rescale_intercept: Option<f64>,
    pub rescale_slope: Option<f64>,
    pub modality_lut: bool,
}

/// A parsed data set: its attributes and pixel data.
#[derive(Debug)]
pub(super) struct Parsed<'a> {
    pub attributes: Attributes,
    pub pixels: Option<PixelData<'a>>,
}

const PREAMBLE: usize = 128;
const UNDEFINED: u32 = 0xFFFF_FFFF;
const ITEM: (u16, u16) = (0xFFFE, 0xE000);
const ITEM_END: (u16, u16) = (0xFFFE, 0xE00D);
const SEQUENCE_END: (u16, u16) = (0xFFFE, 0xE0DD);
const PIXEL_DATA: (u16, u16) = (0x7FE0, 0x0010);
/// Shared and per-frame functional groups, where enhanced objects keep rescale
/// and window (known as sequences also when the VR is implicit).
const FUNCTIONAL_GROUPS: [(u16, u16); 2] = [(0x5200, 0x9229), (0x5200, 0x9230)];
/// Sequences nest no deeper than this in any file we read.
const MAX_NESTING: usize = 16;

/// Whether `bytes` is a DICOM Part 10 file (preamble, then `DICM`).
pub fn is_part10(bytes: &[u8]) -> bool {
    bytes.get(PREAMBLE..PREAMBLE + 4) == Some(b"DICM")
}

/// The data set of a Part 10 file, inflated when its transfer syntax is deflated
/// (to at most `max_inflated` bytes), and its transfer syntax.
pub(super) fn data_set(
    bytes: &[u8],
    max_inflated: usize,
) -> Result<(Syntax, Cow<'_, [u8]>), DicomError> {
    let mut meta = Reader::new(&bytes[PREAMBLE + 4..], true);
    let mut uid = None;
    while meta.peek_group() == Some(0x0002) {
        let e = meta.element()?;
        if e.tag == (0x0002, 0x0010) {
            uid = Some(text(e.value.unwrap_or_default()));
        }
    }
    let uid = uid.ok_or(DicomError::Missing("TransferSyntaxUID"))?;
    let syntax = Syntax::from_uid(&uid)?;
    let rest = &meta.data[meta.pos..];
    if syntax != Syntax::DeflatedExplicitLittle {
        return Ok((syntax, Cow::Borrowed(rest)));
    }
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(rest)
        .take(max_inflated as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| DicomError::Corrupt(format!("the deflated data set: {e}")))?;
    if out.len() > max_inflated {
        return Err(DicomError::Corrupt(format!(
            "the deflated data set inflates to more than {max_inflated} bytes"
        )));
    }
    Ok((syntax, Cow::Owned(out)))
}

/// Reads the data set up to and including its pixel data.
pub(super) fn parse(syntax: Syntax, data: &[u8]) -> Result<Parsed<'_>, DicomError> {
    let mut r = Reader::new(data, syntax.explicit());
    let mut attributes = Attributes::default();
    let mut pixels = None;
    while !r.at_end() {
        let e = r.element()?;
        if e.tag == PIXEL_DATA {
            pixels = Some(match e.value {
                Some(v) => PixelData::Native(v),
                None => PixelData::Fragments(r.fragments()?),
            });
            break;
        }
        r.visit(&e, &mut attributes, Level::TOP)?;
    }
    Ok(Parsed { attributes, pixels })
}

impl Attributes {
    /// Records `tag`'s value if it is one of ours. Inside functional groups only
    /// rescale and window are taken (first found first); inside other sequences
    /// nothing.
    fn set(&mut self, tag: (u16, u16), v: &[u8], level: Level) {
        let top = level.depth == 0;
        if !top && !level.groups {
            return;
        }
        match (tag, top) {
            ((0x0028, 0x1050), _) => first(&mut self.window_center, decimal(v), top),
            ((0x0028, 0x1051), _) => first(&mut self.window_width, decimal(v), top),
            ((0x0028, 0x1052), _) => first(&mut self.rescale_intercept, decimal(v), top),
            ((0x0028, 0x1053), _) => first(&mut self.rescale_slope, decimal(v), top),
            (_, false) => {}
            ((0x0008, 0x0060), _) => self.modality = text(v),
            ((0x0028, 0x0002), _) => self.samples_per_pixel = short(v),
            ((0x0028, 0x0004), _) => self.photometric = text(v),
            ((0x0028, 0x0006), _) => self.planar_configuration = short(v).unwrap_or(0),
            ((0x0028, 0x0008), _) => self.frames = Some(text(v)),
            ((0x0028, 0x0010), _) => self.rows = short(v),
            ((0x0028, 0x0011), _) => self.columns = short(v),
            ((0x0028, 0x0100), _) => self.bits_allocated = short(v),
            ((0x0028, 0x0101), _) => self.bits_stored = short(v),
            ((0x0028, 0x0102), _) => self.high_bit = short(v),
            ((0x0028, 0x0103), _) => self.signed = short(v) == Some(1),
            _ => {}
        }
    }
}

/// Where an element sits: how deep in sequences, and whether inside the
/// functional groups.
#[derive(Debug, Clone, Copy)]
struct Level {
    depth: usize,
    groups: bool,
}

impl Level {
    const TOP: Self = Self {
        depth: 0,
        groups: false,
    };

    /// The level of the items of the sequence `tag` at this level.
    fn inside(self, tag: (u16, u16)) -> Result<Self, DicomError> {
        if self.depth >= MAX_NESTING {
            return Err(DicomError::Corrupt("sequences nest too deeply".into()));
        }
        Ok(Self {
            depth: self.depth + 1,
            groups: self.groups || FUNCTIONAL_GROUPS.contains(&tag),
        })
    }
}

/// A top-level value replaces one found inside a sequence; inside sequences the
/// first one found stays.
fn first(slot: &mut Option<f64>, value: Option<f64>, top: bool) {
    if value.is_some() && (top || slot.is_none()) {
        *slot = value;
    }
}

/// `value` when it is a plausible technical value (at most `max` characters
/// from `allowed`), for an error message; a marker otherwise. A corrupt length
/// can make a value run over into the next elements, patient ones included.
pub(super) fn quotable(value: &str, max: usize, allowed: &str) -> String {
    if value.len() <= max && value.chars().all(|c| allowed.contains(c)) {
        value.to_string()
    } else {
        "(malformed)".to_string()
    }
}

/// A string value's first component, without its padding.
fn text(v: &[u8]) -> String {
    let s = String::from_utf8_lossy(v);
    let first = s.split('\\').next().unwrap_or("");
    first
        .trim_matches(|c: char| c == ' ' || c == '\0')
        .to_string()
}

fn decimal(v: &[u8]) -> Option<f64> {
    text(v).parse::<f64>().ok().filter(|x| x.is_finite())
}

fn short(v: &[u8]) -> Option<u16> {
    Some(u16::from_le_bytes([*v.first()?, *v.get(1)?]))
}

/// One element's header and, when its length is defined, its value.
struct Element<'a> {
    tag: (u16, u16),
    value: Option<&'a [u8]>,
    /// An undefined-length UN element: its items are implicit VR.
    implicit_items: bool,
    /// A sequence of defined length (VR SQ, or a functional groups sequence).
    sequence: bool,
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    explicit: bool,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8], explicit: bool) -> Self {
        Self {
            data,
            pos: 0,
            explicit,
        }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DicomError> {
        let end = self.pos.checked_add(n).ok_or(DicomError::Truncated)?;
        let out = self.data.get(self.pos..end).ok_or(DicomError::Truncated)?;
        self.pos = end;
        Ok(out)
    }

    fn u16(&mut self) -> Result<u16, DicomError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, DicomError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn peek_group(&self) -> Option<u16> {
        let b = self.data.get(self.pos..self.pos + 2)?;
        Some(u16::from_le_bytes([b[0], b[1]]))
    }

    fn tag(&mut self) -> Result<(u16, u16), DicomError> {
        Ok((self.u16()?, self.u16()?))
    }

    /// The next element: tag, VR (explicit syntaxes), length, value.
    fn element(&mut self) -> Result<Element<'a>, DicomError> {
        let tag = self.tag()?;
        let (length, vr) = if tag.0 == 0xFFFE || !self.explicit {
            (self.u32()?, None)
        } else {
            let vr = self.take(2)?;
            let vr = [vr[0], vr[1]];
            if long_vr(vr) {
                self.take(2)?;
                (self.u32()?, Some(vr))
            } else {
                (u32::from(self.u16()?), Some(vr))
            }
        };
        if length == UNDEFINED {
            return Ok(Element {
                tag,
                value: None,
                implicit_items: vr == Some(*b"UN"),
                sequence: true,
            });
        }
        Ok(Element {
            tag,
            value: Some(self.take(length as usize)?),
            implicit_items: false,
            sequence: vr == Some(*b"SQ") || FUNCTIONAL_GROUPS.contains(&tag),
        })
    }

    /// Skips an undefined-length sequence's items (at `level`), taking rescale
    /// and window values found inside functional groups.
    fn skip_sequence(
        &mut self,
        attributes: &mut Attributes,
        level: Level,
        implicit_items: bool,
    ) -> Result<(), DicomError> {
        loop {
            let tag = self.tag()?;
            let length = self.u32()?;
            match tag {
                SEQUENCE_END => return Ok(()),
                ITEM if length == UNDEFINED => self.item(attributes, level, implicit_items)?,
                ITEM => {
                    let body = self.take(length as usize)?;
                    let explicit = self.explicit && !implicit_items;
                    Reader::new(body, explicit).elements(attributes, level)?;
                }
                _ => return Err(DicomError::Corrupt("a sequence holds a non-item".into())),
            }
        }
    }

    /// A defined-length sequence's items (at `level`).
    fn defined_sequence(
        &mut self,
        attributes: &mut Attributes,
        level: Level,
    ) -> Result<(), DicomError> {
        while !self.at_end() {
            let item = self.element()?;
            match (item.tag, item.value) {
                (ITEM, Some(body)) => {
                    Reader::new(body, self.explicit).elements(attributes, level)?
                }
                (ITEM, None) => self.item(attributes, level, false)?,
                _ => return Err(DicomError::Corrupt("a sequence holds a non-item".into())),
            }
        }
        Ok(())
    }

    /// Every element up to the end of a defined-length item.
    fn elements(&mut self, attributes: &mut Attributes, level: Level) -> Result<(), DicomError> {
        while !self.at_end() {
            self.nested_element(attributes, level)?;
        }
        Ok(())
    }

    /// An undefined-length item's elements, up to its delimiter.
    fn item(
        &mut self,
        attributes: &mut Attributes,
        level: Level,
        implicit_items: bool,
    ) -> Result<(), DicomError> {
        let explicit = self.explicit;
        self.explicit = explicit && !implicit_items;
        let result = (|| loop {
            if self.data.get(self.pos..self.pos + 4) == Some(&[0xFE, 0xFF, 0x0D, 0xE0]) {
                self.take(8)?;
                return Ok(());
            }
            self.nested_element(attributes, level)?;
        })();
        self.explicit = explicit;
        result
    }

    fn nested_element(
        &mut self,
        attributes: &mut Attributes,
        level: Level,
    ) -> Result<(), DicomError> {
        let e = self.element()?;
        if e.tag == ITEM_END {
            return Ok(());
        }
        self.visit(&e, attributes, level)
    }

    /// Takes an element's value if it is one of ours, and looks into sequences.
    fn visit(
        &mut self,
        e: &Element<'a>,
        attributes: &mut Attributes,
        level: Level,
    ) -> Result<(), DicomError> {
        if e.tag == (0x0028, 0x3000) && level.depth == 0 {
            attributes.modality_lut = true;
        }
        match e.value {
            // An icon's (or other nested image's) compressed pixels.
            None if e.tag == PIXEL_DATA => self.fragments().map(drop),
            None => self.skip_sequence(attributes, level.inside(e.tag)?, e.implicit_items),
            Some(v) if e.sequence => {
                let inner = level.inside(e.tag)?;
                Reader::new(v, self.explicit).defined_sequence(attributes, inner)
            }
            Some(v) => {
                attributes.set(e.tag, v, level);
                Ok(())
            }
        }
    }

    /// Encapsulated pixel data: the basic offset table, then one item per
    /// fragment, up to the sequence delimiter.
    fn fragments(&mut self) -> Result<Vec<&'a [u8]>, DicomError> {
        let mut out = Vec::new();
        let mut first = true;
        loop {
            let tag = self.tag()?;
            let length = self.u32()?;
            match tag {
                SEQUENCE_END => return Ok(out),
                ITEM if length != UNDEFINED => {
                    let fragment = self.take(length as usize)?;
                    if !first {
                        out.push(fragment);
                    }
                    first = false;
                }
                _ => {
                    return Err(DicomError::Corrupt(
                        "the encapsulated pixel data holds a non-item".into(),
                    ))
                }
            }
        }
    }
}

/// VRs whose explicit header has 2 reserved bytes and a 32-bit length.
fn long_vr(vr: [u8; 2]) -> bool {
    matches!(
        &vr,
        b"OB"
            | b"OD"
            | b"OF"
            | b"OL"
            | b"OV"
            | b"OW"
            | b"SQ"
            | b"SV"
            | b"UC"
            | b"UN"
            | b"UR"
            | b"UT"
            | b"UV"
    )
}
