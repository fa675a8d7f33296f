package mapping

import (
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/nyaruka/phonenumbers"
	"github.com/stretchr/testify/require"
)

// checkE164Agrees fails if the fast path decides s differently from the
// library.
func checkE164Agrees(t testing.TB, s string) (decided bool) {
	out, valid, decided := e164Fast(s)
	if !decided {
		return false
	}
	want, err := e164Library(s, "ZZ")
	if err != nil {
		if valid {
			t.Errorf("%q: fast path says valid %q, library says invalid", s, out)
		}
		return true
	}
	if !valid || out != want {
		t.Errorf("%q: fast path says (%q, valid=%v), library says %q", s, out, valid, want)
	}
	return true
}

// phoneSamples builds numbers for every region: the metadata's example numbers
// (valid by construction), their neighbours, random digits of every possible
// length, a leading national prefix, and separators.
func phoneSamples(rng *rand.Rand) []string {
	var out []string
	regions := make([]string, 0)
	for r := range phoneRegions() {
		regions = append(regions, r)
	}
	sort.Strings(regions)
	seps := []string{"", " ", "-", ".", " (", ") "}
	for _, code := range regions {
		r := phoneRegions()[code]
		cc := strconv.Itoa(int(r.md.GetCountryCode()))
		md := r.md
		for _, d := range []*phonenumbers.PhoneNumberDesc{
			md.GetGeneralDesc(), md.GetFixedLine(), md.GetMobile(), md.GetTollFree(), md.GetPremiumRate(),
			md.GetSharedCost(), md.GetVoip(), md.GetPersonalNumber(), md.GetPager(), md.GetUan(), md.GetVoicemail(),
		} {
			ex := d.GetExampleNumber()
			if ex == "" {
				continue
			}
			out = append(out, "+"+cc+ex, "+"+cc+" "+ex, "+"+cc+"0"+ex, "+"+cc+ex+"1", "+"+cc+ex[:len(ex)-1])
			b := []byte(ex)
			b[len(b)-1] = byte('0' + rng.IntN(10))
			out = append(out, "+"+cc+seps[rng.IntN(len(seps))]+string(b))
			for _, l := range d.GetPossibleLength() {
				if l <= 0 || l > 17 {
					continue
				}
				var sb strings.Builder
				sb.WriteString("+" + cc)
				for i := 0; i < int(l); i++ {
					if rng.IntN(4) == 0 {
						sb.WriteString(seps[rng.IntN(len(seps))])
					}
					sb.WriteByte(byte('0' + rng.IntN(10)))
				}
				out = append(out, sb.String())
			}
		}
	}
	return out
}

func TestE164FastPathMatchesLibrary(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	samples := phoneSamples(rng)
	decided := 0
	for _, s := range samples {
		if checkE164Agrees(t, s) {
			decided++
		}
	}
	// The fast path must actually be used for most well-formed numbers.
	require.Greater(t, decided, len(samples)/2, "fast path decided %d of %d", decided, len(samples))
}

func TestE164(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in, region, want string
		wantErr          bool
	}{
		{in: "+447911123456", region: "GB", want: "+447911123456"},
		{in: "+44 7911 123456", region: "", want: "+447911123456"},
		{in: "07911 123456", region: "GB", want: "+447911123456"},
		{in: "07911 123456", region: "gb", want: "+447911123456"},
		{in: "+44 (0) 7911 123456", region: "GB", want: "+447911123456"},
		{in: "(415) 555-2671", region: "US", want: "+14155552671"},
		{in: "+1 415-555-2671", region: "GB", want: "+14155552671"},
		{in: "0044 7911 123456", region: "GB", want: "+447911123456"},
		{in: "+61 2 9374 4000", region: "AU", want: "+61293744000"},
		{in: "12", region: "GB", wantErr: true},
		{in: "not a phone", region: "GB", wantErr: true},
		{in: "+44 7911", region: "GB", wantErr: true},
		{in: "07911 123456", region: "", wantErr: true}, // no country code, no region
		{in: "+999 1234567", region: "", wantErr: true},
	} {
		got, err := toE164(tc.in, tc.region)
		if tc.wantErr {
			require.Error(t, err, tc.in)
			require.Equal(t, "e164: invalid phone number", err.Error())
			continue
		}
		require.NoError(t, err, tc.in)
		require.Equal(t, tc.want, got, tc.in)
	}
}

func FuzzE164(f *testing.F) {
	for _, s := range []string{"+447911123456", "+1 (415) 555-2671", "+44 (0) 20 7946 0018", "+8801812345678", "+0", "+12"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkE164Agrees(t, s)
	})
}
