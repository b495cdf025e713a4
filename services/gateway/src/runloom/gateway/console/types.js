// @ts-check
/**
 * The wire types the console uses, taken from the generated TypeScript contracts
 * (libs/contracts/generated/runloom.d.ts, generated from the Python definitions by
 * `make contracts`). Never mirror a contract here: import it.
 *
 * @typedef {import("../../../../../../libs/contracts/generated/runloom").RunEvent} RunEvent
 * @typedef {import("../../../../../../libs/contracts/generated/runloom").SourceFound} SourceFound
 * @typedef {import("../../../../../../libs/contracts/generated/runloom").RateLimited} RateLimited
 * @typedef {import("../../../../../../libs/contracts/generated/runloom").RunQueued} RunQueued
 * @typedef {import("../../../../../../libs/contracts/generated/runloom").ClarificationRequested} ClarificationRequested
 * @typedef {import("../../../../../../libs/contracts/generated/runloom").BudgetWarning} BudgetWarning
 * @typedef {import("../../../../../../libs/contracts/generated/runloom").RunBudgetStopped} RunBudgetStopped
 * @typedef {import("../../../../../../libs/contracts/generated/runloom").RunFailed} RunFailed
 * @typedef {import("../../../../../../libs/contracts/generated/runloom").RunCancelled} RunCancelled
 * @typedef {import("../../../../../../libs/contracts/generated/runloom").ArtifactRef} ArtifactRef
 * @typedef {import("../../../../../../libs/contracts/generated/runloom").ContentModel} ContentModel
 * @typedef {import("../../../../../../libs/contracts/generated/runloom").Usage} Usage
 */

export {};
