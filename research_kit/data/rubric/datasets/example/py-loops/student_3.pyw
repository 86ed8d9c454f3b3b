number = int(input("Pick a number: "))

# print the table
for times in range(1, 11):
    answer = number * times
    print(number, "times", times, "is", answer)
