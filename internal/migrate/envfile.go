package migrate

import (
	"regexp"
	"strings"
)

// envVar is one assignment of a systemd EnvironmentFile.
type envVar struct {
	key, value string
	pos        Pos
}

var envKeyRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// parseEnvFile reads a file as systemd reads EnvironmentFile= (locksmithd's
// unit loads update.conf that way): KEY=VALUE lines; lines starting with #
// or ; are comments; single quotes are literal, double quotes allow \" \\
// \` \$ and may span lines; outside quotes a backslash escapes the next
// character and one at the end of a line continues it; unquoted trailing
// blanks are dropped. A line that is not an assignment is ignored with a
// note, as systemd ignores it with a warning.
func parseEnvFile(src Source, ignored func(Note)) []envVar {
	var out []envVar
	text := strings.ReplaceAll(string(src.Data), "\r\n", "\n")
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		start := i + 1
		t := strings.TrimLeft(lines[i], " \t")
		if t == "" || t[0] == '#' || t[0] == ';' {
			continue
		}
		eq := strings.IndexByte(t, '=')
		key := ""
		if eq > 0 {
			key = strings.TrimRight(t[:eq], " \t")
		}
		if eq <= 0 || !envKeyRe.MatchString(key) {
			ignored(Note{Pos: Pos{src.Name, start}, Text: "not a KEY=VALUE assignment; systemd ignores the line"})
			continue
		}
		rest := strings.TrimLeft(t[eq+1:], " \t")
		var val strings.Builder
		trailing := 0 // unquoted blanks at the end of val, dropped at the end
		quote := byte(0)
	scan:
		for {
			for j := 0; j < len(rest); j++ {
				c := rest[j]
				switch {
				case quote == '\'':
					if c == '\'' {
						quote = 0
					} else {
						val.WriteByte(c)
					}
					trailing = 0
				case quote == '"':
					switch {
					case c == '"':
						quote = 0
					case c == '\\' && j+1 < len(rest) && strings.IndexByte("\"\\`$", rest[j+1]) >= 0:
						j++
						val.WriteByte(rest[j])
					case c == '\\' && j+1 == len(rest):
						// a line continuation inside quotes
						if i+1 < len(lines) {
							i++
							rest = lines[i]
							continue scan
						}
					default:
						val.WriteByte(c)
					}
					trailing = 0
				case c == '\'' || c == '"':
					quote = c
					trailing = 0
				case c == '\\':
					if j+1 == len(rest) {
						if i+1 < len(lines) {
							i++
							rest = lines[i]
							continue scan
						}
						break
					}
					j++
					val.WriteByte(rest[j])
					trailing = 0
				case c == ' ' || c == '\t':
					val.WriteByte(c)
					trailing++
				default:
					val.WriteByte(c)
					trailing = 0
				}
			}
			if quote != 0 && i+1 < len(lines) {
				// a quoted value goes on over the line break
				val.WriteByte('\n')
				i++
				rest = lines[i]
				continue
			}
			break
		}
		v := val.String()
		out = append(out, envVar{key: key, value: v[:len(v)-trailing], pos: Pos{src.Name, start}})
	}
	return out
}
