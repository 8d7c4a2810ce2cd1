"""Which areas and numbers would route differently under new rules: in words."""

from __future__ import annotations

from routing.rules import Rules

GRID_STEP_DEG = 0.02  # about 2.2 km north-south, 1.4 km east-west here


def describe_changes(old: Rules, new: Rules) -> list[str]:
    lines: list[str] = []
    lines += _districts(old, new)
    lines += _table("Ortsnetz", old.area_codes, new.area_codes, old, new)
    lines += _table("cell", {k: _cell(v) for k, v in old.cells.items()}, {k: _cell(v) for k, v in new.cells.items()},
                    old, new)  # fmt: skip
    for centre in sorted(set(old.spec.external_targets) | set(new.spec.external_targets)):
        before, after = old.spec.external_targets.get(centre), new.spec.external_targets.get(centre)
        if before != after:
            was = f"{before.name}, {before.number or 'not forwarded'}" if before else "absent"
            now = f"{after.name}, {after.number or 'not forwarded'}" if after else "removed"
            lines.append(f"external target {centre}: {was} → {now}")
    for name in sorted(set(old.spec.sites) | set(new.spec.sites)):
        before_site, after_site = old.spec.sites.get(name), new.spec.sites.get(name)
        if before_site != after_site:
            lines.append(f"site {name}: {before_site} → {after_site}")
    if old.spec.source_priority != new.spec.source_priority:
        lines.append(
            f"location sources: {' > '.join(old.spec.source_priority)} → {' > '.join(new.spec.source_priority)}"
        )
    for field in ("aml_max_age_s", "decision_deadline_ms"):
        if getattr(old.spec, field) != getattr(new.spec, field):
            lines.append(f"{field}: {getattr(old.spec, field)} → {getattr(new.spec, field)}")
    if old.spec.areas.certain_share != new.spec.areas.certain_share:
        lines.append(f"areas.certain_share: {old.spec.areas.certain_share} → {new.spec.areas.certain_share}")
    return lines


def _centre_name(rules: Rules, centre: str | None) -> str:
    if centre is None:
        return "no centre"
    if centre in rules.spec.external_targets:
        return rules.spec.external_targets[centre].name
    return f"ZLS {centre}"


def _districts(old: Rules, new: Rules) -> list[str]:
    lines = []
    for ags in sorted(set(old.spec.areas.districts) | set(new.spec.areas.districts)):
        before, after = old.centre_of(ags), new.centre_of(ags)
        if before != after:
            lines.append(
                f"district {new.district_name(ags)} ({ags}): {_centre_name(old, before)} → {_centre_name(new, after)}"
            )
    if old.index is not new.index and _polygons_differ(old, new):
        old_grid, new_grid = old.index.owner_grid(GRID_STEP_DEG), new.index.owner_grid(GRID_STEP_DEG)
        moved = sum(1 for cell in set(old_grid) | set(new_grid) if old_grid.get(cell) != new_grid.get(cell))
        if moved:
            lines.append(f"district borders: {moved} sample points ({GRID_STEP_DEG}° grid) change district")
    return lines


def _polygons_differ(old: Rules, new: Rules) -> bool:
    return [d.ags for d in old.index.districts] != [d.ags for d in new.index.districts] or any(
        not a.equals(b) for a, b in zip(old.index.geometries, new.index.geometries, strict=True)
    )


def _cell(entry: object) -> str:
    return repr(entry)


def _table(kind: str, before: dict[str, str], after: dict[str, str], old: Rules, new: Rules) -> list[str]:
    lines = []
    for key in sorted(set(before) | set(after)):
        was, now = before.get(key), after.get(key)
        if was == now:
            continue
        if kind == "Ortsnetz":
            was_text = f"{old.district_name(was)} ({_centre_name(old, old.centre_of(was))})" if was else "not listed"
            now_text = f"{new.district_name(now)} ({_centre_name(new, new.centre_of(now))})" if now else "removed"
        else:
            was_text, now_text = was or "not listed", now or "removed"
        lines.append(f"{kind} {key}: {was_text} → {now_text}")
    return lines
