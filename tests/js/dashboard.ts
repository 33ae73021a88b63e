// The type a generated dashboard (dashboards/json/*.json) must have: Grafana's own `Dashboard`
// (npm @grafana/schema, the version of the Grafana the chart deploys), read as JSON, plus the
// few legacy keys grafanalib 0.7.1 still writes, each allowed where it is written and only
// with the value grafanalib writes.  dashboard-check.mjs assigns each dashboard to it.
import type {
  Dashboard,
  Panel,
  TimePickerConfig,
  VariableModel,
  VariableOption,
} from "@grafana/schema";

// A schema type as JSON carries it: an enum is its values (JSON has strings and numbers, not
// TypeScript enums), and an optional key may be null (Grafana reads null as unset).  A
// required key stays required and never null: {"steps": ""} or {"steps": null} is an error.
export type Json<T> = T extends string
  ? string extends T
    ? string
    : `${T}`
  : T extends number | boolean | null | undefined
    ? T
    : T extends readonly (infer Item)[]
      ? Json<Item>[]
      : T extends object
        ? { [K in keyof T]: undefined extends T[K] ? Json<T[K]> | null : Json<T[K]> }
        : T;

// grafanalib's legacy keys.  Grafana 13 ignores every one of them: a value other than the
// one grafanalib writes would be a setting someone meant and Grafana drops, so it fails.
interface LegacyDashboardKeys {
  __inputs?: [];
  hideControls?: false;
  rows?: [];
  sharedCrosshair?: false;
  style?: "dark";
}

// The time picker's quick ranges are `quick_ranges` now; grafanalib writes the old key.
interface LegacyTimePickerKeys {
  time_options?: ["5m", "15m", "1h", "6h", "12h", "24h", "2d", "7d", "30d"];
}

interface LegacyPanelKeys {
  editable?: true;
  error?: false;
  height?: null;
  minSpan?: null;
  span?: null;
}

// The old (Angular) table panel's keys, which grafanalib's Table still writes beside the new
// table's fieldConfig: mappings or a colour here would do nothing.
interface LegacyTableKeys {
  color?: { mode: "thresholds" };
  columns?: [];
  fontSize?: "100%";
  mappings?: [];
}

interface LegacyVariableKeys {
  auto?: false;
  auto_count?: 30;
  auto_min?: "10s";
  tagValuesQuery?: null;
  tagsQuery?: null;
  useTags?: false;
}

// A query variable's current value before Grafana has asked its datasource (it then picks one).
interface UnsetCurrent {
  selected: false;
  tags: [];
  text: null;
  value: null;
}

type MlobsPanel = Json<Panel> & LegacyPanelKeys & ({ type: "table" } & LegacyTableKeys | {});

type MlobsVariable = Omit<Json<VariableModel>, "current"> &
  LegacyVariableKeys & { current?: Json<VariableOption> | UnsetCurrent };

// No row panels: the builders lay panels out on the grid (add Json<RowPanel> when they do).
export type MlobsDashboard = Omit<Json<Dashboard>, "panels" | "templating" | "timepicker"> &
  LegacyDashboardKeys & {
    __generated: string; // our header: which source it comes from (dashboards/generate.py)
    panels?: MlobsPanel[];
    templating?: { list?: MlobsVariable[] };
    timepicker?: Json<TimePickerConfig> & LegacyTimePickerKeys;
  };
