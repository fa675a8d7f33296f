package mapping

import (
	"errors"
	"regexp"
	"strings"
	"sync"

	"github.com/nyaruka/phonenumbers"
)

var errInvalidPhone = errors.New("e164: invalid phone number")

// toE164 normalises phone to E.164 using region for numbers written without a
// country code. It is phonenumbers.Parse + IsValidNumber + Format(E164), with a
// shortcut for the common input that already starts with "+": the library
// spends ~35 µs and ~100 allocations per number (it builds and matches regexes
// several times over), which alone would blow the per-event budget. The
// shortcut replays the library's own decision with the library's own metadata
// and identical regexes, and gives up (falls through to the library) wherever
// the library would do something it does not replay. TestE164FastPathMatchesLibrary
// and FuzzE164 check that both agree.
func toE164(phone, region string) (string, error) {
	if out, valid, decided := e164Fast(phone); decided {
		if !valid {
			return "", errInvalidPhone
		}
		return out, nil
	}
	return e164Library(phone, region)
}

// e164Library is the reference implementation.
func e164Library(phone, region string) (string, error) {
	n, err := phonenumbers.Parse(phone, strings.ToUpper(region))
	if err != nil || !phonenumbers.IsValidNumber(n) {
		return "", errInvalidPhone
	}
	return phonenumbers.Format(n, phonenumbers.E164), nil
}

// validRegion reports whether region is one phonenumbers knows ("GB", not "UK").
func validRegion(region string) bool {
	return phonenumbers.GetSupportedRegions()[strings.ToUpper(region)]
}

// Limits from the library (phonenumbers.MAX_INPUT_STRING_LENGTH and friends).
const (
	maxPhoneInput = 250
	minNSN        = 2
	maxNSN        = 17
)

// e164Fast handles "+<digits>" with ASCII separators. decided=false means
// "not sure, ask the library"; when decided, out/valid are what the library
// would return.
func e164Fast(s string) (out string, valid, decided bool) {
	// Leading junk is dropped by the library; trailing whitespace other than
	// spaces makes it reject the number, so only the left side is trimmed.
	s = strings.TrimLeft(s, " \t\r\n")
	if len(s) < 2 || len(s) > maxPhoneInput || s[0] != '+' {
		return "", false, false
	}
	var buf [1 + 3 + maxNSN]byte
	buf[0] = '+'
	n := 1
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			if n == len(buf) {
				return "", false, false
			}
			buf[n] = c
			n++
		case c == ' ' || c == '-' || c == '.' || c == '(' || c == ')':
			// punctuation the library ignores; it cannot start an extension
		default:
			return "", false, false
		}
	}
	digits := buf[1:n]
	if len(digits) < 4 || digits[0] == '0' {
		return "", false, false
	}
	// Country code: the shortest prefix of 1-3 digits that is assigned, as in
	// the library's extractCountryCode.
	cc, ccLen := 0, 0
	for i := 1; i <= 3 && i < len(digits); i++ {
		cc = cc*10 + int(digits[i-1]-'0')
		if len(phonenumbers.GetRegionCodesForCountryCode(cc)) > 0 {
			ccLen = i
			break
		}
	}
	if ccLen == 0 {
		return "", false, false
	}
	regions := phonenumbers.GetRegionCodesForCountryCode(cc)
	if regions[0] == "001" { // non-geographic entity: not replayed
		return "", false, false
	}
	nsnBytes := digits[ccLen:]
	if len(nsnBytes) < minNSN || len(nsnBytes) > maxNSN {
		return "", false, false
	}
	nsn := string(nsnBytes) // does not escape unless returned below
	main := phoneRegionInfo(regions[0])
	if main == nil {
		return "", false, false
	}
	// The library may strip a national prefix (the "0" in +44 (0)20...) even
	// after a country code; when that could happen, let it.
	if main.nationalPrefix != nil && main.nationalPrefix.MatchString(nsn) {
		return "", false, false
	}
	if !validNSN(nsn, regions) {
		return "", false, true
	}
	return string(buf[:n]), true, true
}

// validNSN is IsValidNumber for a number whose country code has these regions:
// GetRegionCodeForNumber followed by IsValidNumberForRegion.
func validNSN(nsn string, regions []string) bool {
	if len(regions) == 1 {
		r := phoneRegionInfo(regions[0])
		return r != nil && r.valid(nsn)
	}
	for _, code := range regions {
		r := phoneRegionInfo(code)
		if r == nil {
			continue
		}
		if r.leadingDigits != nil {
			if r.leadingDigits.MatchString(nsn) {
				return r.valid(nsn)
			}
		} else if r.valid(nsn) {
			return true
		}
	}
	return false
}

// phoneRegion holds one region's metadata with its patterns compiled exactly
// as the library compiles them ("^(?:" + p + ")$").
type phoneRegion struct {
	once           sync.Once
	md             *phonenumbers.PhoneMetadata
	nationalPrefix *regexp.Regexp
	leadingDigits  *regexp.Regexp
	general        phoneDesc
	types          []phoneDesc // premium .. voicemail, in the library's order
	fixed, mobile  phoneDesc
	sameFixedMob   bool
}

type phoneDesc struct {
	lengths []int32
	re      *regexp.Regexp
}

func (d *phoneDesc) match(nsn string) bool {
	if len(d.lengths) > 0 {
		ok := false
		for _, l := range d.lengths {
			if int(l) == len(nsn) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return d.re.MatchString(nsn)
}

// valid is getNumberTypeHelper(nsn) != UNKNOWN: the general pattern and at
// least one type pattern match. Only "which type" depends on the library's
// order, not "any type", so fixed line and mobile, by far the most common,
// are tried first.
func (r *phoneRegion) valid(nsn string) bool {
	if !r.general.match(nsn) {
		return false
	}
	if r.fixed.match(nsn) || (!r.sameFixedMob && r.mobile.match(nsn)) {
		return true
	}
	for i := range r.types {
		if r.types[i].match(nsn) {
			return true
		}
	}
	return false
}

// phoneRegions indexes the library's embedded metadata by region. It is
// derived data, equivalent to a constant table; regexes are compiled on first
// use of a region (sync.Once) because compiling all ~250 regions costs ~0.1 s.
var phoneRegions = sync.OnceValue(func() map[string]*phoneRegion {
	m := map[string]*phoneRegion{}
	coll, err := phonenumbers.MetadataCollection()
	if err != nil || coll == nil {
		return m
	}
	for _, md := range coll.GetMetadata() {
		if id := md.GetId(); id != "" && id != "001" {
			m[id] = &phoneRegion{md: md}
		}
	}
	return m
})

func phoneRegionInfo(code string) *phoneRegion {
	r := phoneRegions()[code]
	if r == nil {
		return nil
	}
	r.once.Do(r.compile)
	return r
}

func (r *phoneRegion) compile() {
	md := r.md
	if p := md.GetNationalPrefixForParsing(); p != "" {
		r.nationalPrefix = regexp.MustCompile("^(?:" + p + ")")
	}
	if p := md.GetLeadingDigits(); p != "" {
		r.leadingDigits = regexp.MustCompile("^(?:" + p + ")")
	}
	desc := func(d *phonenumbers.PhoneNumberDesc) phoneDesc {
		return phoneDesc{
			lengths: d.GetPossibleLength(),
			re:      regexp.MustCompile("^(?:" + d.GetNationalNumberPattern() + ")$"),
		}
	}
	r.general = desc(md.GetGeneralDesc())
	for _, d := range []*phonenumbers.PhoneNumberDesc{
		md.GetPremiumRate(), md.GetTollFree(), md.GetSharedCost(), md.GetVoip(),
		md.GetPersonalNumber(), md.GetPager(), md.GetUan(), md.GetVoicemail(),
	} {
		r.types = append(r.types, desc(d))
	}
	r.fixed = desc(md.GetFixedLine())
	r.mobile = desc(md.GetMobile())
	r.sameFixedMob = md.GetSameMobileAndFixedLinePattern()
}
