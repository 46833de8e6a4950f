// The chat page's sampling settings and system prompt: one set for every conversation, kept in localStorage and
// sent with each request (OpenAI's fields, plus vLLM's top_k and repetition_penalty that lmforge serve accepts).
"use strict";

const SETTINGS_STORAGE = "lmforge.settings";
const DEFAULTS = { system: "", temperature: 0.7, top_p: 0.9, top_k: 0, repetition_penalty: 1.0, max_tokens: "",
                   seed: "" }; // "": not sent (the server's default length; a random seed)
const OPTIONAL = ["max_tokens", "seed"];
const INPUTS = { system: "system-prompt", temperature: "temperature", top_p: "top-p", top_k: "top-k",
                 repetition_penalty: "repetition-penalty", max_tokens: "max-tokens", seed: "seed" };

let settings = { ...DEFAULTS, ...storedSettings() };

function storedSettings() {
  try {
    const stored = JSON.parse(localStorage.getItem(SETTINGS_STORAGE)) || {};
    return Object.fromEntries(Object.keys(DEFAULTS).filter((k) => typeof stored[k] === typeof DEFAULTS[k])
      .map((k) => [k, stored[k]]));
  } catch {
    return {};
  }
}

function showSettings() {
  for (const [name, id] of Object.entries(INPUTS)) $(id).value = settings[name];
}

function readSetting(name) {
  const raw = $(INPUTS[name]).value;
  if (name === "system") return raw;
  const value = Number(raw);
  if (OPTIONAL.includes(name)) return raw.trim() === "" || !(value >= 0) ? "" : String(Math.floor(value));
  if (raw.trim() === "" || !Number.isFinite(value)) return DEFAULTS[name];
  return name === "top_k" ? Math.max(0, Math.floor(value)) : value;
}

function wireSettings() {
  for (const name of Object.keys(INPUTS)) {
    $(INPUTS[name]).addEventListener("input", () => {
      settings[name] = readSetting(name);
      localStorage.setItem(SETTINGS_STORAGE, JSON.stringify(settings));
    });
  }
  $("reset-settings").addEventListener("click", () => {
    settings = { ...DEFAULTS };
    localStorage.setItem(SETTINGS_STORAGE, JSON.stringify(settings));
    showSettings();
  });
  showSettings();
}
