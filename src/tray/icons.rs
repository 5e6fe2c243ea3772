//! The tray icons, embedded in the binary: one PNG per [`IconKind`], rendered from the SVG
//! sources in `assets/icons/` by `assets/make-icons.sh`.

use super::view::IconKind;

/// The size handed to the panel; hosts scale it down (exactly by half on 1x panels).
pub const SIZE: u32 = 48;

macro_rules! png48 {
    ($stem:literal) => {
        include_bytes!(concat!("../../assets/icons/48/", $stem, ".png")).as_slice()
    };
}

/// The embedded PNG for an icon.
pub fn png(kind: IconKind) -> &'static [u8] {
    match kind {
        IconKind::UpToDate => png48!("tiffin-up-to-date"),
        IconKind::UpdateAvailable => png48!("tiffin-update-available"),
        IconKind::Updating(_) => png48!("tiffin-updating"),
        IconKind::Failed => png48!("tiffin-failed"),
        IconKind::RolledBack => png48!("tiffin-rolled-back"),
        IconKind::RebootNeeded => png48!("tiffin-reboot-needed"),
        IconKind::AgentUnreachable => png48!("tiffin-agent-unreachable"),
        IconKind::ServerUnreachable => png48!("tiffin-server-unreachable"),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("icon PNG: {0}")]
pub struct IconError(String);

/// Decodes a PNG to 8-bit RGBA: (width, height, pixels).
pub fn decode_rgba(png_bytes: &[u8]) -> Result<(u32, u32, Vec<u8>), IconError> {
    let mut decoder = png::Decoder::new(png_bytes);
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(|e| IconError(e.to_string()))?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| IconError(e.to_string()))?;
    buf.truncate(info.buffer_size());
    let rgba = match info.color_type {
        png::ColorType::Rgba => buf,
        png::ColorType::Rgb => buf
            .chunks_exact(3)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect(),
        png::ColorType::GrayscaleAlpha => buf
            .chunks_exact(2)
            .flat_map(|p| [p[0], p[0], p[0], p[1]])
            .collect(),
        png::ColorType::Grayscale => buf.iter().flat_map(|&g| [g, g, g, 255]).collect(),
        png::ColorType::Indexed => {
            return Err(IconError("indexed colour left after normalising".into()))
        }
    };
    Ok((info.width, info.height, rgba))
}

/// The icon as RGBA pixels.
pub fn rgba(kind: IconKind) -> Result<(u32, u32, Vec<u8>), IconError> {
    decode_rgba(png(kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_icon_decodes_at_48px_and_differs_from_the_others() {
        let mut seen = Vec::new();
        for kind in IconKind::ALL {
            let (w, h, px) = rgba(kind).expect("decodes");
            assert_eq!((w, h), (SIZE, SIZE), "{kind:?}");
            assert!(!seen.contains(&px), "{kind:?} looks like another state");
            seen.push(px);
        }
    }
}
