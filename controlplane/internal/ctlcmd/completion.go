package ctlcmd

import (
	"context"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
)

// compNode is a command as the completion scripts see it.
type compNode struct {
	name, summary string
	subs          []compNode // a group's subcommands
	flags         []compFlag // a leaf's flags
	fileArgs      bool       // positional arguments are files
	words         []string   // fixed positional words (completion's shells)
}

type compFlag struct {
	name   string // without dashes
	isBool bool
}

// flagValues are the values offered after a flag, by flag name.
var flagValues = map[string][]string{
	"o":             {"table", "json"},
	"format":        {"pem", "der"},
	"role":          {"admin", "operator", "viewer"},
	"reason":        revocationReasons,
	"mode":          dmsModes,
	"device-auth":   dmsDeviceAuths,
	"key-algorithm": keyAlgorithms,
}

// fileFlags take a file name.
var fileFlags = []string{"csr", "cert", "key", "key-passphrase-file", "ca-file", "out", "bootstrap-ca"}

var shells = []string{"bash", "zsh", "fish"}

// completionTree describes every command, with the frame's own "version"
// and "help", sorted like the help lists them.
func completionTree() []compNode {
	var nodes []compNode
	for _, c := range commands() {
		n := compNode{name: c.name, summary: c.summary}
		if c.leaf != nil {
			n = leafNode(c.name, c.summary, c.leaf)
		}
		for _, s := range c.subs {
			n.subs = append(n.subs, leafNode(s.name, s.summary, s))
		}
		nodes = append(nodes, n)
	}
	nodes = append(nodes,
		compNode{name: "version", summary: "print the version and the commit the binary was built from"},
		compNode{name: "help", summary: "list the commands"})
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].name < nodes[j].name })
	return nodes
}

func leafNode(name, summary string, s *subcommand) compNode {
	n := compNode{name: name, summary: summary, fileArgs: strings.Contains(s.args, "FILE")}
	if name == "completion" {
		n.words = shells
	}
	fs, _ := s.newFlagSet(name, &run{})
	fs.VisitAll(func(f *flag.Flag) {
		bf, ok := f.Value.(interface{ IsBoolFlag() bool })
		n.flags = append(n.flags, compFlag{name: f.Name, isBool: ok && bf.IsBoolFlag()})
	})
	return n
}

func dashed(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

func flagWords(flags []compFlag) string {
	w := []string{"--help"}
	for _, f := range flags {
		w = append(w, dashed(f.name))
	}
	return strings.Join(w, " ")
}

func names(nodes []compNode) string {
	var w []string
	for _, n := range nodes {
		w = append(w, n.name)
	}
	return strings.Join(w, " ")
}

func completionCmd() *subcommand {
	return &subcommand{
		name: "completion", args: "bash|zsh|fish", summary: "print a shell completion script for bash, zsh or fish",
		minArgs: 1, maxArgs: 1,
		setup: func(fs *flag.FlagSet) func(context.Context, *run) error {
			return func(_ context.Context, r *run) error {
				tree := completionTree()
				switch r.args[0] {
				case "bash":
					return bashCompletion(r.stdout, tree)
				case "zsh":
					return zshCompletion(r.stdout, tree)
				case "fish":
					return fishCompletion(r.stdout, tree)
				}
				return usageErrorf("unknown shell %q: want bash, zsh or fish", r.args[0])
			}
		},
	}
}

// valueCases writes the shell case arms completing flag values, in the
// syntax of bash and zsh (which agree here); values is the command that
// offers a list of words, files the one that offers file names.
func valueCases(b *strings.Builder, indent, values, files string) {
	keys := make([]string, 0, len(flagValues))
	for k := range flagValues {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(b, "%s%s) %s;;\n", indent, dashed(k), fmt.Sprintf(values, strings.Join(flagValues[k], " ")))
	}
	var ff []string
	for _, f := range fileFlags {
		ff = append(ff, dashed(f))
	}
	fmt.Fprintf(b, "%s%s) %s;;\n", indent, strings.Join(ff, "|"), files)
}

func bashCompletion(w io.Writer, tree []compNode) error {
	var b strings.Builder
	b.WriteString(`# bash completion for outpostctl.
# Load it with: source <(outpostctl completion bash)
# or install it: outpostctl completion bash > /etc/bash_completion.d/outpostctl

_outpostctl() {
    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"
    local cmd="${COMP_WORDS[1]}" sub="${COMP_WORDS[2]}"
    local words="" flags=""
    COMPREPLY=()
    case "$prev" in
`)
	valueCases(&b, "        ", `COMPREPLY=($(compgen -W "%s" -- "$cur")); return`, `COMPREPLY=($(compgen -f -- "$cur")); return`)
	b.WriteString("    esac\n    if [[ $COMP_CWORD -eq 1 ]]; then\n")
	fmt.Fprintf(&b, "        words=%q\n", names(tree))
	b.WriteString("    else\n        case \"$cmd\" in\n")
	for _, n := range tree {
		fmt.Fprintf(&b, "            %s)\n", n.name)
		if len(n.subs) == 0 {
			if len(n.words) > 0 {
				fmt.Fprintf(&b, "                [[ $COMP_CWORD -eq 2 ]] && words=%q\n", strings.Join(n.words, " "))
			}
			fmt.Fprintf(&b, "                flags=%q;;\n", flagWords(n.flags))
			continue
		}
		fmt.Fprintf(&b, "                if [[ $COMP_CWORD -eq 2 ]]; then\n                    words=%q\n                else\n", names(n.subs))
		b.WriteString("                    case \"$sub\" in\n")
		for _, s := range n.subs {
			fmt.Fprintf(&b, "                        %s) flags=%q;;\n", s.name, flagWords(s.flags))
		}
		b.WriteString("                    esac\n                fi;;\n")
	}
	b.WriteString(`        esac
    fi
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$flags" -- "$cur"))
    elif [[ -n "$words" ]]; then
        COMPREPLY=($(compgen -W "$words" -- "$cur"))
    fi
}
complete -o default -F _outpostctl outpostctl
`)
	_, err := io.WriteString(w, b.String())
	return err
}

// zshDescribe quotes name:summary for _describe.
func zshDescribe(n compNode) string {
	return shellQuote(strings.ReplaceAll(n.name, ":", `\:`) + ":" + n.summary)
}

// shellQuote single-quotes s for sh, bash, zsh and fish alike.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func zshCompletion(w io.Writer, tree []compNode) error {
	var b strings.Builder
	b.WriteString(`#compdef outpostctl
# zsh completion for outpostctl.
# Load it with: source <(outpostctl completion zsh)
# or install it as _outpostctl in a directory on $fpath.
compdef _outpostctl outpostctl

_outpostctl() {
    local -a items flags
    case "${words[CURRENT-1]}" in
`)
	valueCases(&b, "        ", `compadd -- %s; return`, `_files; return`)
	b.WriteString("    esac\n    if (( CURRENT == 2 )); then\n        items=(\n")
	for _, n := range tree {
		fmt.Fprintf(&b, "            %s\n", zshDescribe(n))
	}
	b.WriteString("        )\n        _describe -t commands 'outpostctl command' items\n        return\n    fi\n")
	b.WriteString("    case \"${words[2]}\" in\n")
	for _, n := range tree {
		fmt.Fprintf(&b, "        %s)\n", n.name)
		if len(n.subs) == 0 {
			if len(n.words) > 0 {
				fmt.Fprintf(&b, "            if (( CURRENT == 3 )); then compadd -- %s; return; fi\n", strings.Join(n.words, " "))
			}
			fmt.Fprintf(&b, "            flags=(%s);;\n", flagWords(n.flags))
			continue
		}
		b.WriteString("            if (( CURRENT == 3 )); then\n                items=(\n")
		for _, s := range n.subs {
			fmt.Fprintf(&b, "                    %s\n", zshDescribe(s))
		}
		fmt.Fprintf(&b, "                )\n                _describe -t commands '%s subcommand' items\n                return\n            fi\n", n.name)
		b.WriteString("            case \"${words[3]}\" in\n")
		for _, s := range n.subs {
			fmt.Fprintf(&b, "                %s) flags=(%s);;\n", s.name, flagWords(s.flags))
		}
		b.WriteString("            esac;;\n")
	}
	b.WriteString(`    esac
    if [[ "$PREFIX" == -* ]]; then
        compadd -- $flags
    else
        _files
    fi
}

if [ "$funcstack[1]" = "_outpostctl" ]; then
    _outpostctl "$@"
fi
`)
	_, err := io.WriteString(w, b.String())
	return err
}

func fishCompletion(w io.Writer, tree []compNode) error {
	var b strings.Builder
	b.WriteString(`# fish completion for outpostctl.
# Load it with: outpostctl completion fish | source
# or install it: outpostctl completion fish > ~/.config/fish/completions/outpostctl.fish
complete -c outpostctl -f
`)
	fishFlags := func(cond string, n compNode) {
		if n.fileArgs {
			fmt.Fprintf(&b, "complete -c outpostctl -n %s -F\n", shellQuote(cond))
		}
		if len(n.words) > 0 {
			fmt.Fprintf(&b, "complete -c outpostctl -n %s -a %s\n", shellQuote(cond), shellQuote(strings.Join(n.words, " ")))
		}
		for _, f := range n.flags {
			opt := "-l " + f.name
			if len(f.name) == 1 {
				opt = "-s " + f.name
			}
			switch {
			case f.isBool:
			case isFileFlag(f.name):
				opt += " -r -F"
			case flagValues[f.name] != nil:
				opt += " -x -a " + shellQuote(strings.Join(flagValues[f.name], " "))
			default:
				opt += " -x"
			}
			fmt.Fprintf(&b, "complete -c outpostctl -n %s %s\n", shellQuote(cond), opt)
		}
	}
	for _, n := range tree {
		fmt.Fprintf(&b, "complete -c outpostctl -n __fish_use_subcommand -a %s -d %s\n", n.name, shellQuote(n.summary))
	}
	for _, n := range tree {
		if len(n.subs) == 0 {
			fishFlags("__fish_seen_subcommand_from "+n.name, n)
			continue
		}
		subNames := names(n.subs)
		for _, s := range n.subs {
			fmt.Fprintf(&b, "complete -c outpostctl -n %s -a %s -d %s\n",
				shellQuote(fmt.Sprintf("__fish_seen_subcommand_from %s; and not __fish_seen_subcommand_from %s", n.name, subNames)),
				s.name, shellQuote(s.summary))
		}
		for _, s := range n.subs {
			fishFlags(fmt.Sprintf("__fish_seen_subcommand_from %s; and __fish_seen_subcommand_from %s", n.name, s.name), s)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func isFileFlag(name string) bool {
	for _, f := range fileFlags {
		if f == name {
			return true
		}
	}
	return false
}
