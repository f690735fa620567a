/**
 * The TypeScript declarations: they compile with a typical use (and reject
 * misuse), and each module's .d.ts declares exactly what the module exports.
 */

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { describe, test } from "node:test";
import { promisify } from "node:util";

const require = createRequire(import.meta.url);
const ts = require("typescript");
const JS_DIR = fileURLToPath(new URL("..", import.meta.url));
const MODULES = readdirSync(JS_DIR).filter((name) => name.endsWith(".js")).sort();

describe("TypeScript declarations", function () {
    test("every module has a .d.ts", function () {
        assert.deepEqual(MODULES, ["backoff.js", "codec.js", "emitter.js", "trioroom.js", "utf8.js"]);
        const declarations = readdirSync(JS_DIR).filter((name) => name.endsWith(".d.ts")).sort();
        assert.deepEqual(declarations, MODULES.map((name) => name.replace(/\.js$/, ".d.ts")));
    });

    test("each .d.ts declares exactly the module's runtime exports", async function () {
        const files = MODULES.map((name) => JS_DIR + name.replace(/\.js$/, ".d.ts"));
        const program = ts.createProgram(files, { strict: true, noEmit: true, moduleResolution: ts.ModuleResolutionKind.Bundler, module: ts.ModuleKind.ESNext });
        const checker = program.getTypeChecker();
        for (const [index, name] of MODULES.entries()) {
            const source = program.getSourceFile(files[index]);
            const symbol = checker.getSymbolAtLocation(source);
            const declared = checker
                .getExportsOfModule(symbol)
                // Type-only exports have no runtime value.
                .filter((exported) => {
                    const target = exported.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(exported) : exported;
                    return (target.flags & ts.SymbolFlags.Value) !== 0;
                })
                .map((exported) => exported.getName())
                .sort();
            const runtime = Object.keys(await import(new URL("../" + name, import.meta.url))).sort();
            assert.deepEqual(declared, runtime, name);
        }
    });

    test("test/types/usage.ts uses every public member: each export, and each member of its classes and interfaces", function () {
        const usage = fileURLToPath(new URL("./types/usage.ts", import.meta.url));
        const options = { strict: true, noEmit: true, moduleResolution: ts.ModuleResolutionKind.Bundler, module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, lib: ["lib.es2022.d.ts", "lib.dom.d.ts"] };
        const program = ts.createProgram([usage], options);
        const checker = program.getTypeChecker();
        const resolve = (symbol) => (symbol.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(symbol) : symbol);
        // Every symbol the usage file refers to, by declaration.
        const used = new Set();
        (function visit(node) {
            if (ts.isIdentifier(node) || ts.isPrivateIdentifier(node)) {
                const symbol = checker.getSymbolAtLocation(node);
                if (symbol !== undefined) {
                    used.add(resolve(symbol));
                    // A property of a union or an overload set: count each declaration's symbol.
                    (symbol.declarations || []).forEach((declaration) => declaration.symbol && used.add(declaration.symbol));
                }
                const parent = node.parent;
                let type;
                if (ts.isPropertyAccessExpression(parent) && parent.name === node) {
                    type = checker.getTypeAtLocation(parent.expression);
                } else if ((ts.isPropertyAssignment(parent) || ts.isShorthandPropertyAssignment(parent)) && parent.name === node) {
                    type = checker.getContextualType(parent.parent);
                }
                if (type !== undefined) {
                    const whole = checker.getNonNullableType(type);
                    for (const part of whole.isUnion() ? whole.types : [whole]) {
                        const property = checker.getPropertyOfType(checker.getApparentType(part), node.text);
                        if (property !== undefined) {
                            used.add(property);
                            (property.declarations || []).forEach((declaration) => declaration.symbol && used.add(declaration.symbol));
                        }
                    }
                }
            }
            ts.forEachChild(node, visit);
        })(program.getSourceFile(usage));
        const missing = [];
        for (const name of MODULES) {
            const file = program.getSourceFile(JS_DIR + name.replace(/\.js$/, ".d.ts"));
            assert.ok(file, name);
            for (const exported of checker.getExportsOfModule(checker.getSymbolAtLocation(file))) {
                const target = resolve(exported);
                if (exported.getName() === "default") {
                    continue;
                }
                if (!used.has(target)) {
                    missing.push(name + ": " + exported.getName());
                }
                // Members of the classes and interfaces declared here (not inherited from Error, Uint8Array, ...).
                if (target.flags & (ts.SymbolFlags.Class | ts.SymbolFlags.Interface)) {
                    const members = target.members || new Map();
                    members.forEach((member, memberName) => {
                        if (memberName === "__constructor" || memberName === "name" || member.flags & ts.SymbolFlags.TypeParameter) {
                            return;
                        }
                        const declared = (member.declarations || []).some((declaration) => declaration.getSourceFile() === file);
                        if (declared && !used.has(member)) {
                            missing.push(name + ": " + exported.getName() + "." + memberName);
                        }
                    });
                }
            }
        }
        assert.deepEqual(missing, [], "not used in test/types/usage.ts:\n" + missing.join("\n"));
    });

    test("the declarations need no TypeScript newer than 5.0: no generic typed arrays", function () {
        for (const name of MODULES) {
            const declarations = readFileSync(JS_DIR + name.replace(/\.js$/, ".d.ts"), "utf8");
            assert.doesNotMatch(declarations, /(Uint8|Int8|Uint16|Int16|Uint32|Int32|Float32|Float64|BigInt64|BigUint64|Uint8Clamped)Array</, name);
        }
    });

    test("a typical program type-checks against them, and misuse does not", { timeout: 120000 }, async function () {
        const tsc = require.resolve("typescript/bin/tsc");
        try {
            await promisify(execFile)(process.execPath, [tsc, "-p", "test/types/tsconfig.json"], { cwd: JS_DIR });
        } catch (error) {
            assert.fail("tsc failed:\n" + error.stdout + error.stderr);
        }
    });
});
